//! The running server: [`Application::build`] opens the store, loads the
//! keys, starts the committer (and pull mode), and binds one SO_REUSEPORT
//! listener per event loop (port 0 works); [`Application::run_until_stopped`]
//! runs one single-threaded event loop per listener until the shutdown future
//! resolves, drains in-flight requests (bounded), stops the background work
//! and closes the database.
//!
//! Connections are served by hyper directly (warp only routes), so header
//! timeouts, header limits and the connection cap are ours to set.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::api::cache::BodyCache;
use crate::api::slots::StreamSlots;
use crate::api::spool::{BodyFiles, Pace};
use crate::api::webhooks::BodyIntake;
use crate::api::{self, AppState};
use crate::auth::{KeyError, Verifier};
use crate::config::Settings;
use crate::ingest::committer::Committer;
use crate::ingest::pull;
use crate::ingest::signature::WebhookVerifier;
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
    #[error("startup task failed: {0}")]
    Task(String),
}

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A bound, ready-to-serve rollcall.
pub struct Application {
    /// One listener per event loop (SO_REUSEPORT: the kernel spreads
    /// connections across them).
    listeners: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    state: AppState,
    settings: Settings,
    committer_thread: JoinHandle<()>,
    stop_background: watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
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
        let (committer, committer_thread) =
            Committer::start(store.clone(), settings.group_commit_max);
        let listeners = bind(settings.listen, settings.workers.max(1))?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.listen,
                source,
            })?;
        let state = app_state(&settings, store.clone(), auth, committer.clone())?;
        let (stop_background, stopped) = watch::channel(false);
        let mut background = vec![tokio::spawn(
            state.auth.clone().keep_keys_fresh(stopped.clone()),
        )];
        #[cfg(unix)]
        background.push(reload_keys_on_hangup(state.auth.clone(), stopped.clone())?);
        if let Some(pull_settings) = settings.pull.clone() {
            background.push(tokio::spawn(pull::run(
                pull_settings,
                store,
                committer,
                stopped,
            )));
        }
        Ok(Self {
            listeners,
            addr,
            state,
            settings,
            committer_thread,
            stop_background,
            background,
        })
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
    /// Each listener gets its own thread with a single-threaded runtime (an
    /// event loop per core, like nginx's workers): a connection lives on one
    /// thread from accept to close, so no request pays for waking another.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listeners,
            addr,
            state,
            settings,
            committer_thread,
            stop_background,
            background,
        } = self;
        tracing::info!(%addr, loops = listeners.len(), "rollcall listening");
        let routes = api::routes(state.clone());
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        let (stop, stopped) = watch::channel(false);
        let mut loops = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (routes, slots, settings, stopped) = (
                routes.clone(),
                slots.clone(),
                settings.clone(),
                stopped.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("rollcall-loop-{i}"))
                .spawn(move || event_loop(listener, routes, slots, &settings, stopped));
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
        body_files: BodyFiles::new(settings.body_files_dir(), settings.body_files_budget).map_err(
            |e| {
                StartupError::Task(format!(
                    "cannot create the body-file folder {}: {e}",
                    settings.body_files_dir().display()
                ))
            },
        )?,
        render_budget: Arc::new(Semaphore::new(
            (settings.render_budget / 1024).clamp(1, Semaphore::MAX_PERMITS),
        )),
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

/// Binds `n` listeners on one address with SO_REUSEPORT (port 0: the port
/// the first one got).
fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartupError> {
    let err = |source| StartupError::Bind { addr, source };
    let mut listeners = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        #[cfg(unix)]
        socket.set_reuse_port(true).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.bind(&at.into()).map_err(err)?;
        socket.listen(1024).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        at = listener.local_addr().map_err(err)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// One event loop: accepts on its listener and serves its connections
/// until told to stop, then drains them (bounded).
fn event_loop(
    listener: std::net::TcpListener,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    slots: Arc<Semaphore>,
    settings: &Settings,
    mut stopped: watch::Receiver<bool>,
) {
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
        let service = warp::service(routes);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            .max_headers(MAX_HEADERS);
        let graceful = GracefulShutdown::new();
        loop {
            // Hold back accepting while at the connection cap.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stopped.changed() => break,
            };
            let (stream, _peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let conn = http.serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            );
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        drop(service);
        if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
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
/// fetched) until the background work stops. Installed before the server
/// answers, so SIGHUP never takes its default action (ending the process).
///
/// # Errors
/// When the signal handler cannot be installed.
#[cfg(unix)]
fn reload_keys_on_hangup(
    auth: Arc<Verifier>,
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
