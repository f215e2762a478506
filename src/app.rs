//! The running server: [`Application::build`] opens the store, loads the
//! keys, binds one listening socket (port 0 works; a port already in use is
//! refused), and starts the committer (and, with a WorkOS API key, the
//! sync: backfill, events, reconcile);
//! [`Application::run_until_stopped`] runs one single-threaded event loop
//! per worker, each accepting on its own handle of that socket, until the
//! shutdown future resolves, drains in-flight requests (bounded), stops the
//! background work and closes the database.
//!
//! Connections are served by hyper directly (warp only routes), so header
//! timeouts, header limits and the connection cap are ours to set; what
//! happens on a connection below warp is [`crate::net`]'s.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::api::cache::BodyCache;
use crate::api::slots::StreamSlots;
use crate::api::spool::{BodyFiles, Pace};
use crate::api::webhooks::BodyIntake;
use crate::api::{self, AppState};
use crate::auth::{KeyError, Verifier};
use crate::config::Settings;
use crate::ingest::committer::Committer;
use crate::ingest::signature::WebhookVerifier;
use crate::ingest::sync::{self, SyncStatus};
use crate::ingest::workos_api::WorkosApi;
use crate::net::cap::{Admitted, Connections};
use crate::net::front::FrontDoor;
use crate::net::io::ConnIo;
use crate::net::spread::{Handoff, Load, Spread};
use crate::net::tls::{Stream, Tls, TlsError};
use crate::store::{Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "no token verification is configured: set --jwks-url, --jwks-file or --jwt-secret (or run with --dev)"
    )]
    NoVerification,
    #[error("refusing to start: {0}")]
    Unsafe(#[from] crate::config::UnsafeSetting),
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("startup task failed: {0}")]
    Task(String),
}

/// Largest request head (request line and headers, up to and including
/// the empty line) accepted, in bytes; hyper enforces it exactly.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;
/// Longest a TLS handshake may take (the header timeout when shorter): a
/// client that connects and says nothing holds its slot at most this long
/// before the request head's own timeout starts.
const MAX_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(5);

/// A bound, ready-to-serve rollcall.
pub struct Application {
    /// One handle per event loop on the same listening socket.
    listeners: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    state: AppState,
    settings: Settings,
    committer_thread: JoinHandle<()>,
    stop_background: watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The certificate when serving HTTPS.
    tls: Option<Arc<Tls>>,
    /// `/metrics`' own listener, with `--metrics-listen`.
    metrics: Option<std::net::TcpListener>,
}

impl Application {
    /// Opens the store and binds the listener.
    ///
    /// # Errors
    /// A [`StartupError`] saying what is wrong (locked or foreign database,
    /// unreadable keys, address in use, no verification configured).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        check_settings(&settings)?;
        let store = open_store(&settings).await?;
        Self::build_with_store(settings, store).await
    }

    /// Like [`Application::build`] with an already opened store.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<Store>,
    ) -> Result<Self, StartupError> {
        check_settings(&settings)?;
        let auth = Arc::new(Verifier::new(settings.auth.clone()).await?);
        let tls = match &settings.tls {
            Some(files) => Some(Tls::load(&files.cert, &files.key)?),
            None => None,
        };
        let listeners = bind(settings.listen, settings.workers.max(1))?;
        let metrics = match settings.metrics_listen {
            Some(addr) => bind(addr, 1)?.pop(),
            None => None,
        };
        let (committer, committer_thread) =
            Committer::start(store.clone(), settings.group_commit_max);
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.listen,
                source,
            })?;
        let sync_status = Arc::new(match &settings.sync {
            Some(_) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || SyncStatus::load(&store))
                    .await
                    .map_err(|e| StartupError::Task(e.to_string()))??
            }
            None => SyncStatus::default(),
        });
        let mut state = app_state(&settings, store.clone(), auth, committer.clone())?;
        state.sync = sync_status.clone();
        state.public_url = settings.public_url(addr).into();
        let (stop_background, stopped) = watch::channel(false);
        let mut background = vec![tokio::spawn(
            state.auth.clone().keep_keys_fresh(stopped.clone()),
        )];
        if let Some(tls) = &tls {
            background.push(tokio::spawn(tls.clone().watch(stopped.clone())));
        }
        #[cfg(unix)]
        background.push(reload_keys_on_hangup(
            state.auth.clone(),
            tls.clone(),
            stopped.clone(),
        )?);
        #[cfg(unix)]
        match crate::control::Control::bind(&settings.data, store.clone(), committer.clone()) {
            Ok(control) => background.push(tokio::spawn(control.serve(stopped.clone()))),
            Err(e) => tracing::warn!(
                error = %e,
                "no control socket: `rollcall backup` and `rollcall export` cannot reach this server"
            ),
        }
        if let Some(sync_settings) = settings.sync.clone() {
            let ctx = sync::Context {
                api: WorkosApi::new(sync_settings.api.clone(), stopped.clone())
                    .map_err(|e| StartupError::Task(e.to_string()))?,
                store,
                committer,
                settings: Arc::new(sync_settings),
                status: sync_status,
            };
            background.push(spawn_sync(ctx, stopped)?);
        }
        Ok(Self {
            listeners,
            addr,
            state,
            settings,
            committer_thread,
            stop_background,
            background,
            tls,
            metrics,
        })
    }

    /// The address `/metrics` is served on, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The store this server serves.
    pub fn store(&self) -> Arc<Store> {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves, then drains and closes.
    ///
    /// Each listener handle gets its own thread with a single-threaded
    /// runtime (an event loop per core, like nginx's workers): a connection
    /// lives on one thread from accept (or handoff, see
    /// [`crate::net::spread`]) to close, so no request pays for waking
    /// another.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listeners,
            addr,
            state,
            settings,
            committer_thread,
            stop_background,
            background,
            tls,
            metrics,
        } = self;
        let metrics_server = metrics.and_then(|listener| {
            serve_metrics(listener, &state, &settings, stop_background.subscribe())
        });
        let observe = crate::metrics::Observe {
            shard: 0,
            metrics: settings.metrics_listen.is_some(),
            access_log: settings.access_log,
        };
        let ids = Arc::new(crate::metrics::RequestIds::default());
        tracing::info!(%addr, loops = listeners.len(), tls = tls.is_some(), "rollcall listening");
        let routes = api::routes(state.clone());
        let connections = Connections::new(settings.max_connections);
        let (spread, inboxes) = Spread::new(listeners.len());
        let (stop, stopped) = watch::channel(false);
        let mut loops = Vec::new();
        for (index, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let parts = LoopParts {
                index,
                listener,
                inbox,
                spread: spread.clone(),
                connections: connections.clone(),
                routes: routes.clone(),
                stopped: stopped.clone(),
                tls: tls.clone(),
                observe: crate::metrics::Observe {
                    shard: index,
                    ..observe
                },
                ids: ids.clone(),
            };
            let settings = settings.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rollcall-loop-{index}"))
                .spawn(move || event_loop(parts, &settings));
            match spawned {
                Ok(handle) => loops.push(handle),
                Err(e) => tracing::error!(error = %e, "cannot start an event loop"),
            }
        }
        drop(routes);
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop.send(true);
        let _ = tokio::task::spawn_blocking(move || {
            for handle in loops {
                let _ = handle.join();
            }
        })
        .await;
        let _ = stop_background.send(true);
        if let Some(task) = metrics_server {
            let _ = task.await;
        }
        for task in background {
            let _ = task.await;
        }
        // Joining the committer means its last commit is done before the
        // database closes.
        state.committer.stop().await;
        let _ = tokio::task::spawn_blocking(move || committer_thread.join()).await;
        drop(state);
        tracing::info!("rollcall stopped");
    }
}

/// Starts serving `/metrics` on `listener` until the background work stops
/// (`None`: it could not start, which is logged).
fn serve_metrics(
    listener: std::net::TcpListener,
    state: &AppState,
    settings: &Settings,
    stopped: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr().ok()?;
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the metrics listener");
            return None;
        }
    };
    let registry = Arc::new(crate::metrics::registry(crate::metrics::Sources {
        store: state.store.clone(),
        data: settings.data.clone(),
        cache: state.bodies.clone(),
        body_files: state.body_files.clone(),
        streams: state.streams.clone(),
        sync: state.sync.clone(),
    }));
    tracing::info!(%addr, "metrics listening");
    Some(tokio::spawn(crate::metrics::serve(
        listener, registry, stopped,
    )))
}

/// What the routes share, built from the settings.
///
/// # Errors
/// When the body-file folder cannot be created.
pub fn app_state(
    settings: &Settings,
    store: Arc<Store>,
    auth: Arc<Verifier>,
    committer: Committer,
) -> Result<AppState, StartupError> {
    Ok(AppState {
        store,
        auth,
        committer,
        webhooks: settings
            .webhook_secret
            .as_ref()
            .map(|s| WebhookVerifier::new(s.clone(), settings.webhook_tolerance)),
        intake: Arc::new(BodyIntake::new(
            settings.max_webhook_bodies,
            settings.webhook_body_budget,
            settings.body_timeout,
            settings.max_body_bytes,
        )),
        bodies: Arc::new(BodyCache::new(settings.cache_bytes)),
        body_files: BodyFiles::new(
            settings.body_files_dir(),
            settings.body_files_budget,
            // An organization's private bodies: its share of the streams'.
            settings.body_files_budget * settings.max_streams_per_org as u64
                / settings.max_streams.max(1) as u64,
        )
        .map_err(|e| {
            StartupError::Task(format!(
                "cannot create the body-file folder {}: {e}",
                settings.body_files_dir().display()
            ))
        })?,
        render_budget: Arc::new(Semaphore::new(
            (settings.render_budget / 1024).clamp(1, Semaphore::MAX_PERMITS),
        )),
        sync: Arc::new(SyncStatus::default()),
        stream_threshold: settings.stream_threshold,
        streams: Arc::new(StreamSlots::new(
            settings.max_streams,
            settings.max_streams_per_org,
            settings.stream_wait,
        )),
        pace: Pace {
            stall: settings.stream_stall,
            grace: settings.stream_grace,
            min_rate: settings.min_stream_rate,
        },
        // SCIM bodies come from a directory's own identity provider, once
        // its token is checked; a big group's member list may be megabytes.
        scim_intake: Arc::new(BodyIntake::new(
            settings.max_webhook_bodies,
            settings.webhook_body_budget,
            settings.body_timeout,
            settings.max_scim_body_bytes,
        )),
        scim_lists: Arc::new(Semaphore::new(settings.workers.max(1))),
        scim_cursors: Arc::default(),
        public_url: settings.public_url(settings.listen).into(),
    })
}

/// Refuses settings the server must not run with (no verification, an
/// empty or weak secret) and logs the warnings of those it may.
///
/// # Errors
/// [`StartupError::NoVerification`] or [`StartupError::Unsafe`].
pub fn check_settings(settings: &Settings) -> Result<(), StartupError> {
    let warnings = settings.check()?;
    if !settings.auth.is_configured() {
        return Err(StartupError::NoVerification);
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// Binds one listening socket and returns `n` handles on it, one per event
/// loop (each registers its own handle with its own reactor, and the kernel
/// hands each connection to whichever loop accepts first).
///
/// Never SO_REUSEPORT: with it a second server — another rollcall on
/// another database included — could bind the same port and take part of
/// the traffic. Without it, a port already in use is an error here, always.
///
/// # Errors
/// [`StartupError::Bind`], naming the address.
fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartupError> {
    let err = |source| StartupError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    // SO_REUSEADDR only lets a restart bind over connections of the last
    // run still in TIME_WAIT; it never admits a second listener on Unix.
    // (On Windows it would, and Windows needs it for nothing.)
    #[cfg(unix)]
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    let listener: std::net::TcpListener = socket.into();
    let mut listeners = Vec::with_capacity(n);
    for _ in 1..n {
        listeners.push(listener.try_clone().map_err(err)?);
    }
    listeners.push(listener);
    Ok(listeners)
}

/// What one event loop runs on.
struct LoopParts {
    index: usize,
    /// This loop's handle on the listening socket.
    listener: std::net::TcpListener,
    /// Connections other loops accepted and handed to this one.
    inbox: mpsc::UnboundedReceiver<Handoff>,
    spread: Arc<Spread>,
    connections: Arc<Connections>,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    stopped: watch::Receiver<bool>,
    tls: Option<Arc<Tls>>,
    /// What the front door records per request.
    observe: crate::metrics::Observe,
    ids: Arc<crate::metrics::RequestIds>,
}

/// What an event loop is woken for.
enum Next {
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    HandedOver(Handoff),
}

/// One event loop: accepts on its handle of the listening socket (keeping
/// each connection or handing it to a less loaded loop) and serves its
/// connections until told to stop, then drains them (bounded).
/// Runs sync on a thread of its own, below the event loops' priority:
/// fetching and parsing WorkOS pages (a backfill, a reconcile round) must
/// never hold up a read. The task returned ends when sync has stopped.
fn spawn_sync(
    ctx: sync::Context,
    stopped: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StartupError> {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rollcall-sync".into())
        .spawn(move || {
            lower_priority();
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(sync::run(ctx, stopped)),
                Err(e) => tracing::error!(error = %e, "cannot start the sync runtime"),
            }
            let _ = done.send(());
        })
        .map_err(|e| StartupError::Task(e.to_string()))?;
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

/// Lowers the calling thread's scheduling priority (nice 10); the threads
/// it starts inherit it. Best effort: a refusal only costs read latency.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(error = %e, "cannot lower the sync thread's priority");
    }
}

fn event_loop(parts: LoopParts, settings: &Settings) {
    let LoopParts {
        index,
        listener,
        mut inbox,
        spread,
        connections,
        routes,
        stopped,
        tls,
        observe,
        ids,
    } = parts;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start an event loop runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register a listener");
                return;
            }
        };
        let service = TowerToHyperService::new(warp::service(routes));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .max_header_size(MAX_HEADER_BYTES)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            // Body chunks are queued, never copied into hyper's buffer: a
            // file body's placeholders must reach the writer as they are
            // (so never `pipeline_flush`, which copies them).
            .writev(true)
            .max_headers(MAX_HEADERS);
        // Every connection task holds a clone of `drain`; `drained.closed()`
        // resolves once the last one has ended.
        let (drained, drain) = watch::channel(());
        let mut stop = stopped.clone();
        loop {
            let next = tokio::select! {
                accepted = listener.accept() => Next::Accepted(accepted),
                Some(handoff) = inbox.recv() => Next::HandedOver(handoff),
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let (stream, admitted, load) = match next {
                Next::Accepted(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Next::Accepted(Ok((stream, _peer))) => {
                    // At the cap this makes room by closing an idle connection.
                    let Some(admitted) = connections.admit(&mut stop).await else {
                        break;
                    };
                    match keep_or_hand_over(stream, admitted, index, &spread) {
                        Some(kept) => kept,
                        None => continue,
                    }
                }
                Next::HandedOver(handoff) => match TcpStream::from_std(handoff.stream) {
                    Ok(stream) => (stream, handoff.admitted, handoff.load),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot take a handed-over connection");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (mut stopped, drain) = (stopped.clone(), drain.clone());
            let (http, service, tls, ids) =
                (http.clone(), service.clone(), tls.clone(), ids.clone());
            let handshake_timeout = settings.header_timeout.min(MAX_HANDSHAKE);
            let write_stall = settings.write_stall;
            tokio::spawn(async move {
                let stream = match tls {
                    None => Stream::Plain(stream),
                    Some(tls) => {
                        let accept =
                            tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream));
                        // A connection still in its handshake is idle to the
                        // connection cap: at the cap it is among the first
                        // asked to close, and gives its slot back at once.
                        let done = tokio::select! {
                            done = accept => done,
                            () = admitted.asked_to_close() => {
                                tracing::debug!("closed mid-handshake to make room");
                                return;
                            }
                            _ = stopped.wait_for(|stop| *stop) => return,
                        };
                        match done {
                            Ok(Ok(stream)) => Stream::Tls(Box::new(stream)),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                // Only plain connections can hand a file to the kernel.
                let files = (matches!(stream, Stream::Plain(_)) && crate::net::sendfile::SUPPORTED)
                    .then(crate::net::sendfile::FileQueue::new);
                let io = TokioIo::new(ConnIo::new(stream, write_stall, files.clone()));
                let front = FrontDoor::new(service, admitted.state(), observe, ids, files);
                let conn = http.serve_connection(io, front);
                tokio::pin!(conn);
                let ended = tokio::select! {
                    ended = conn.as_mut() => Some(ended),
                    _ = stopped.wait_for(|stop| *stop) => None,
                    () = admitted.asked_to_close() => None,
                };
                // Asked to stop: finish the request in progress, if any,
                // then close.
                let ended = match ended {
                    Some(ended) => ended,
                    None => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(admitted);
                drop(load);
                drop(drain);
            });
        }
        drop(listener);
        drop(service);
        drop(drain);
        if tokio::time::timeout(settings.shutdown_grace, drained.closed())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within the grace period");
        }
    });
    // Streams still running on this loop's blocking pool get a moment to
    // see their client gone.
    runtime.shutdown_timeout(settings.shutdown_grace);
}

/// Keeps a connection loop `index` accepted, or hands it to a less loaded
/// loop (`None`: handed over, or lost on the way).
fn keep_or_hand_over(
    stream: TcpStream,
    admitted: Admitted,
    index: usize,
    spread: &Spread,
) -> Option<(TcpStream, Admitted, Load)> {
    let (to, load) = spread.place(index);
    if to == index {
        return Some((stream, admitted, load));
    }
    let stream = stream
        .into_std()
        .map_err(|e| tracing::debug!(error = %e, "cannot hand a connection over"))
        .ok()?;
    let handoff = Handoff {
        stream,
        admitted,
        load,
    };
    // Err: that loop has stopped taking connections, so serve it here.
    let back = spread.hand_to(to, handoff).err()?;
    let stream = TcpStream::from_std(back.stream)
        .map_err(|e| tracing::debug!(error = %e, "cannot take a connection back"))
        .ok()?;
    Some((stream, back.admitted, spread.claim(index)))
}

/// Opens the configured store off the async threads.
///
/// # Errors
/// As [`Store::open`].
pub async fn open_store(settings: &Settings) -> Result<Arc<Store>, StartupError> {
    let path = settings.data.clone();
    let options = settings.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&path, options))
        .await
        .map_err(|e| StartupError::Task(e.to_string()))??;
    Ok(Arc::new(store))
}

/// Turns SIGHUP into a key reload (the JWKS file read again, the URL
/// fetched, the TLS certificate read again) until the background work stops. Installed before the server
/// answers, so SIGHUP never takes its default action (ending the process).
///
/// # Errors
/// When the signal handler cannot be installed.
#[cfg(unix)]
fn reload_keys_on_hangup(
    auth: Arc<Verifier>,
    tls: Option<Arc<Tls>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StartupError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| StartupError::Task(format!("cannot handle SIGHUP: {e}")))?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                received = hangups.recv() => match received {
                    Some(()) => {
                        tracing::info!("SIGHUP: reloading the token keys");
                        auth.reload_keys();
                        if let Some(tls) = &tls {
                            tls.reload();
                        }
                    }
                    None => break,
                },
                _ = stopped.changed() => break,
            }
        }
    }))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
