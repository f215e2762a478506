//! Optional TLS (`--tls-cert` / `--tls-key`), for installs that face
//! clients without a proxy in front.
//!
//! - [`Tls`] holds the certificate chain and key as a rustls server
//!   configuration, and loads them again when either file changes (looked
//!   at every [`WATCH_EVERY`]) or on SIGHUP — the same moments the JWKS
//!   file is read again. A pair that cannot be used at start stops the
//!   server naming the file; later, the pair already loaded stays (with a
//!   warning), so a half-written renewal never takes the server down.
//!   Connections already open keep the certificate they were accepted
//!   with; new ones get the new one.
//! - [`Stream`] is an accepted connection, plain or TLS, as
//!   [`super::io::ConnIo`] wraps it.
//!
//! The handshake is bounded by the caller (the header timeout), so a
//! client that opens a connection and says nothing holds nothing for long.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the certificate and key files are looked at for a change.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Largest certificate or key file read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Why a certificate/key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {problem}")]
    Read { path: PathBuf, problem: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {problem}")]
    NoKey { path: PathBuf, problem: String },
    #[error("the key {key} does not fit the certificate {cert}: {problem}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        problem: String,
    },
}

/// What a file looked like when it was last loaded: a change of either
/// means a renewal to load.
type Seen = Option<(SystemTime, u64)>;

/// The server's certificate and key, reloadable.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
    /// What the files looked like when last loaded; held across a whole
    /// reload, so the watcher and SIGHUP never install an older read last.
    seen: Mutex<(Seen, Seen)>,
}

impl Tls {
    /// Loads the pair.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be used.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let seen = (looked_at(cert), looked_at(key));
        let config = server_config(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(TlsAcceptor::from(config)),
            seen: Mutex::new(seen),
        }))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the pair again; on failure the loaded one stays. Returns
    /// whether the new pair is in use.
    pub fn reload(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        *seen = (looked_at(&self.cert), looked_at(&self.key));
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    TlsAcceptor::from(config);
                tracing::info!(cert = %self.cert.display(), "TLS certificate loaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the TLS certificate already loaded");
                false
            }
        }
    }

    /// Loads the pair again whenever either file changes, until `stopped`.
    pub async fn watch(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(WATCH_EVERY) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let now = (looked_at(&self.cert), looked_at(&self.key));
            let changed = *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != now;
            if changed {
                self.reload();
            }
        }
    }
}

fn looked_at(path: &Path) -> Seen {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read = |problem: String| TlsError::Read {
        path: path.to_owned(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(read(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: cert.to_owned(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&read_pem(key)?).map_err(|e| TlsError::NoKey {
        path: key.to_owned(),
        problem: e.to_string(),
    })?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        problem: e.to_string(),
    };
    // The provider is named, not taken from the process default: which
    // one a dependency enabled must not decide how rollcall serves.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(mismatch)?;
    // rollcall speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An accepted connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
