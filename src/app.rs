//! The running server: [`Application::build`] opens the store, loads the
//! keys, starts the committer (and pull mode), and binds the listener (port 0
//! works); [`Application::run_until_stopped`] serves until the shutdown
//! future resolves, drains in-flight requests (bounded), stops the background
//! work and closes the database.
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
    #[error("startup task failed: {0}")]
    Task(String),
}

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A bound, ready-to-serve rollcall.
pub struct Application {
    listener: TcpListener,
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
        if !settings.auth.is_configured() {
            return Err(StartupError::NoVerification);
        }
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
        if !settings.auth.is_configured() {
            return Err(StartupError::NoVerification);
        }
        let auth = Arc::new(Verifier::new(settings.auth.clone()).await?);
        let (committer, committer_thread) =
            Committer::start(store.clone(), settings.group_commit_max);
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let state = AppState {
            store: store.clone(),
            auth,
            committer: committer.clone(),
            webhooks: settings
                .webhook_secret
                .as_ref()
                .map(|s| WebhookVerifier::new(s.clone(), settings.webhook_tolerance)),
            max_body_bytes: settings.max_body_bytes,
            bodies: Arc::new(BodyCache::new(settings.cache_bytes)),
            stream_threshold: settings.stream_threshold,
            streams: Arc::new(Semaphore::new(settings.max_streams)),
            stream_stall: settings.stream_stall,
        };
        let (stop_background, stopped) = watch::channel(false);
        let mut background = Vec::new();
        if let Some(pull_settings) = settings.pull.clone() {
            background.push(tokio::spawn(pull::run(
                pull_settings,
                store,
                committer,
                stopped,
            )));
        }
        Ok(Self {
            listener,
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
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            addr,
            state,
            settings,
            committer_thread,
            stop_background,
            background,
        } = self;
        tracing::info!(%addr, "rollcall listening");
        let service = warp::service(api::routes(state.clone()));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            .max_headers(MAX_HEADERS);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Hold back accepting while at the connection cap.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
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
                () = &mut shutdown => break,
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
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within the grace period");
        }
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
