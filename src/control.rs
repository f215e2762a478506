//! The operator's channel into a running server: a Unix socket beside the
//! database (`<data>.sock`), owner-only, never the public listener.
//!
//! The protocol is one request line of JSON, `{"op": …, …}`, then the
//! answer:
//! - `{"op":"backup","path":"/abs/file"}` → one line,
//!   `{"ok":true,"backup":{…checked counts…}}` or `{"ok":false,"error":"…"}`.
//! - `{"op":"export"}` → `{"ok":true}`, the NDJSON export, then a trailer
//!   line `{"end":"ok","report":{…}}` or `{"end":"error","error":"…"}` (a
//!   stream cut short has no trailer, and the client says so).
//!
//! A malformed line or an unknown op is answered `{"ok":false,"error":…}`
//! and changes nothing. New ops are a new [`Request`] variant and an arm in
//! [`handle`].
//!
//! Only the server's own user (or root) may connect: the socket is created
//! 0600 in the data folder, and each peer's uid is checked again.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::ingest::committer::Committer;
use crate::ingest::ndjson::{self, ExportReport};
use crate::store::Store;
use crate::store::backup::{self, Checked};

/// Longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an export waits for its client to take more before it is
/// abandoned (and its read transaction released).
const EXPORT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Overrides [`EXPORT_WRITE_TIMEOUT`], in milliseconds: for tests only.
const EXPORT_WRITE_TIMEOUT_ENV: &str = "ROLLCALL_TEST_EXPORT_WRITE_TIMEOUT_MS";
/// Exports served at once; a backup runs alone.
const MAX_EXPORTS: usize = 2;
/// How long a stopping server waits for a cancelled backup to clean up.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

fn export_write_timeout() -> Duration {
    std::env::var(EXPORT_WRITE_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(EXPORT_WRITE_TIMEOUT, Duration::from_millis)
}

/// The backups and exports running, and the flag that cancels backups.
#[derive(Default)]
struct Jobs {
    backups: AtomicUsize,
    exports: AtomicUsize,
    cancel: AtomicBool,
}

/// A place among the running jobs, given back when dropped.
struct Slot {
    jobs: Arc<Jobs>,
    backup: bool,
}

impl Jobs {
    fn counter(&self, backup: bool) -> &AtomicUsize {
        if backup { &self.backups } else { &self.exports }
    }

    /// A place for a backup (at most one) or an export (at most
    /// [`MAX_EXPORTS`]), or `None` when they are taken.
    fn take(self: &Arc<Self>, backup: bool) -> Option<Slot> {
        let max = if backup { 1 } else { MAX_EXPORTS };
        self.counter(backup)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                jobs: self.clone(),
                backup,
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.jobs
            .counter(self.backup)
            .fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// A consistent copy of the whole database to `path` (absolute).
    Backup { path: PathBuf },
    /// The NDJSON export, streamed back.
    Export,
    /// A SCIM directory operation (`rollcall directory …`), answered with
    /// one line `{"ok":true,"result":…}`.
    Directory {
        request: crate::scim::admin::DirectoryOp,
    },
}

/// The control socket of the database at `data`: `<data>.sock` beside it.
pub fn socket_path(data: &Path) -> PathBuf {
    let mut name = data
        .file_name()
        .map_or_else(|| "rollcall.redb".into(), ToOwned::to_owned);
    name.push(".sock");
    crate::config::data_dir(data).join(name)
}

/// The listening control socket of a running server.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    store: Arc<Store>,
    /// The server's writer: directory operations share its transactions,
    /// so the in-memory directory map sees commits in their order.
    committer: Committer,
    jobs: Arc<Jobs>,
}

impl Control {
    /// Binds the control socket of `store`'s database, owner-only,
    /// replacing a stale one left by a crash (the caller holds the
    /// database's lock, so no live server owns it).
    ///
    /// # Errors
    /// When something other than a socket is in the way, or the socket
    /// cannot be made owner-only.
    pub fn bind(data: &Path, store: Arc<Store>, committer: Committer) -> std::io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let path = socket_path(data);
        let folder = crate::config::data_dir(data);
        let mode = std::fs::metadata(&folder)?.permissions().mode();
        if mode & 0o002 != 0 {
            return Err(std::io::Error::other(format!(
                "the data folder {} is writable by every user (mode {:o}): the socket could be replaced; make it 0700",
                folder.display(),
                mode & 0o7777
            )));
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&path)?,
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a socket; remove it",
                    path.display()
                )));
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(&path)?;
        // Before this, the umask's mode (never group- or world-writable
        // with the usual 022) already keeps others from connecting.
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self {
            listener,
            path,
            store,
            committer,
            jobs: Arc::default(),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until `stopped` turns true, then cancels a running
    /// backup (waiting a little for it to remove its temp file) and removes
    /// the socket.
    pub async fn serve(self, mut stopped: watch::Receiver<bool>) {
        tracing::info!(socket = %self.path.display(), "control socket listening");
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(handle(
                            stream,
                            self.store.clone(),
                            self.committer.clone(),
                            self.jobs.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                changed = stopped.changed() => {
                    if changed.is_err() || *stopped.borrow() {
                        break;
                    }
                }
            }
        }
        self.jobs.cancel.store(true, Ordering::SeqCst);
        let waited = std::time::Instant::now();
        while self.jobs.backups.load(Ordering::SeqCst) > 0 && waited.elapsed() < CANCEL_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn refusal(error: impl std::fmt::Display) -> Vec<u8> {
    let mut line = json!({"ok": false, "error": error.to_string()}).to_string();
    line.push('\n');
    line.into_bytes()
}

/// Whether the peer runs as this process's user (or root).
fn peer_allowed(stream: &UnixStream) -> bool {
    let me = rustix::process::getuid().as_raw();
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == me || c.uid() == 0)
}

/// Serves one connection: one request, one answer.
async fn handle(stream: UnixStream, store: Arc<Store>, committer: Committer, jobs: Arc<Jobs>) {
    let mut stream = tokio::io::BufReader::new(stream);
    if !peer_allowed(stream.get_ref()) {
        let _ = stream
            .get_mut()
            .write_all(&refusal("only the server's own user may use this socket"))
            .await;
        return;
    }
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut stream)
            .take(MAX_REQUEST_BYTES)
            .read_until(b'\n', &mut line),
    )
    .await;
    let request = match read {
        Err(_) => Err("no request line within 10 s".to_owned()),
        Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if !line.ends_with(b"\n") => Err(format!(
            "the request must be one line of JSON ending in a newline, at most {MAX_REQUEST_BYTES} bytes"
        )),
        Ok(Ok(_)) => serde_json::from_slice::<Request>(&line).map_err(|e| {
            format!(
                "malformed request ({e}); expected one line like {{\"op\":\"backup\",\"path\":\"/abs/file\"}} or {{\"op\":\"export\"}}"
            )
        }),
    };
    let mut stream = stream.into_inner();
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "control request refused");
            let _ = stream.write_all(&refusal(e)).await;
            // Closing with unread input would reset the connection before
            // the client reads why: read what else it sent (bounded).
            let _ = stream.shutdown().await;
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::copy(&mut (&mut stream).take(1 << 20), &mut tokio::io::sink()),
            )
            .await;
            return;
        }
    };
    tracing::info!(?request, "control request");
    if let Request::Directory { request } = request {
        let result = match crate::scim::admin::write_of(&request) {
            Ok(Some(mut write)) => committer
                .run(move |tx| write(tx))
                .await
                .map_err(|e| e.to_string())
                .and_then(|answer| answer),
            Ok(None) => on_low_thread(move || crate::scim::admin::list(&store))
                .await
                .and_then(|answer| answer),
            Err(e) => Err(e),
        };
        let line = match result {
            Ok(result) => {
                let mut l = json!({"ok": true, "result": result}).to_string();
                l.push('\n');
                l.into_bytes()
            }
            Err(e) => refusal(e),
        };
        let _ = stream.write_all(&line).await;
        return;
    }
    let Some(slot) = jobs.take(matches!(request, Request::Backup { .. })) else {
        let busy = match request {
            Request::Backup { .. } => "a backup is already running".to_owned(),
            _ => format!("{MAX_EXPORTS} exports are already running; try again later"),
        };
        tracing::info!(error = %busy, "control request refused");
        let _ = stream.write_all(&refusal(busy)).await;
        return;
    };
    match request {
        Request::Backup { path } => {
            let started = std::time::Instant::now();
            let result = on_low_thread(move || {
                let result = backup::backup(&store, &path, &slot.jobs.cancel);
                drop(slot);
                result
            })
            .await;
            let line = match result {
                Ok(Ok(checked)) => {
                    tracing::info!(
                        seconds = started.elapsed().as_secs_f64(),
                        users = checked.users,
                        bytes = checked.bytes,
                        "backup written"
                    );
                    let mut l = json!({"ok": true, "backup": checked}).to_string();
                    l.push('\n');
                    l.into_bytes()
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "backup failed");
                    refusal(e)
                }
                Err(e) => refusal(e),
            };
            let _ = stream.write_all(&line).await;
        }
        // Answered above, without a job slot.
        Request::Directory { .. } => {}
        Request::Export => {
            let stream = match stream.into_std().and_then(|s| {
                s.set_nonblocking(false)?;
                // A client that stops reading must not hold the export (and
                // its read transaction) forever.
                s.set_write_timeout(Some(export_write_timeout()))?;
                Ok(s)
            }) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot stream an export");
                    return;
                }
            };
            let _ = on_low_thread(move || {
                export_to(&store, stream);
                drop(slot);
            })
            .await;
        }
    }
}

/// The client's end of an export: once a write fails (the client left, or
/// took nothing within the write timeout), every later one fails at once.
struct Client {
    stream: StdStream,
    failed: bool,
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failed {
            return Err(std::io::Error::other("the export's client is gone"));
        }
        self.stream.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other("the export's client is gone"));
        }
        self.stream.flush().inspect_err(|_| self.failed = true)
    }
}

/// Writes the export and its trailer to `stream` (blocking); abandoned
/// when the client stops taking it.
fn export_to(store: &Store, stream: StdStream) {
    let mut out = BufWriter::with_capacity(
        1 << 20,
        Client {
            stream,
            failed: false,
        },
    );
    if out.write_all(b"{\"ok\":true}\n").is_err() {
        return;
    }
    let trailer = match ndjson::export(store, &mut out, |_| {}) {
        Ok(report) => json!({"end": "ok", "report": report}),
        Err(e) if out.get_ref().failed => {
            tracing::warn!(error = %e, "export abandoned: the client stopped reading");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "export failed");
            json!({"end": "error", "error": e.to_string()})
        }
    };
    let _ = writeln!(out, "{trailer}");
    if out.flush().is_err() {
        tracing::warn!("export abandoned: the client stopped reading");
    }
}

/// Runs `f` on a thread of its own at low priority (a backup or an export
/// must not hold up a read); its result, or why it did not run.
async fn on_low_thread<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rollcall-control".into())
        .spawn(move || {
            crate::app::lower_priority();
            let _ = done.send(f());
        })
        .map_err(|e| format!("cannot start the worker thread: {e}"))?;
    result
        .await
        .map_err(|_| "the worker thread failed".to_owned())
}

/// A connection to a running server's control socket.
pub type Server = StdStream;

/// Connects to the control socket of the database at `data`: `None` when
/// no server answers there (no socket, or a stale one).
///
/// # Errors
/// When the socket exists but may not be used (another user's server).
pub fn connect(data: &Path) -> Result<Option<Server>, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = socket_path(data);
    // Only a socket of our own user (or root) is a server we asked for.
    match std::fs::symlink_metadata(&path) {
        Err(_) => return Ok(None),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!(
                "{} is not a socket; remove it (a running server replaces it at start)",
                path.display()
            ));
        }
        Ok(meta) => {
            let me = rustix::process::getuid().as_raw();
            // Root may also use the socket of the data folder's owner (a
            // service's user): the server accepts root as a peer.
            let folder_owner = || {
                std::fs::metadata(crate::config::data_dir(data))
                    .is_ok_and(|f| f.uid() == meta.uid())
            };
            if meta.uid() != me && meta.uid() != 0 && !(me == 0 && folder_owner()) {
                return Err(format!(
                    "the socket {} belongs to uid {}, not to you (uid {me}): run as the server's user",
                    path.display(),
                    meta.uid()
                ));
            }
        }
    }
    match StdStream::connect(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!(
            "cannot reach the running server through {}: {e}",
            path.display()
        )),
    }
}

fn send(stream: &mut StdStream, request: &Request) -> Result<(), String> {
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("cannot send the request to the server: {e}"))
}

/// A refusal line's message, if `line` is one.
fn refused(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    (v["ok"] == false).then(|| v["error"].as_str().unwrap_or("refused").to_owned())
}

/// Sends `request` and reads the one-line answer.
fn one_line(mut stream: StdStream, request: &Request) -> Result<serde_json::Value, String> {
    send(&mut stream, request)?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("the server's answer was cut short: {e}"))?;
    if let Some(error) = refused(&line) {
        return Err(error);
    }
    serde_json::from_slice(&line).map_err(|_| "the server's answer was cut short".to_owned())
}

/// Asks the server to run a directory operation.
///
/// # Errors
/// The server's refusal, or a broken channel.
pub fn request_directory(
    stream: StdStream,
    request: &crate::scim::admin::DirectoryOp,
) -> Result<serde_json::Value, String> {
    let request = Request::Directory {
        request: request.clone(),
    };
    Ok(one_line(stream, &request)?["result"].take())
}

/// Asks the server to write a backup to `path`.
///
/// # Errors
/// The server's refusal or failure, or a broken channel.
pub fn request_backup(stream: StdStream, path: &Path) -> Result<Checked, String> {
    let request = Request::Backup {
        path: path.to_owned(),
    };
    serde_json::from_value(one_line(stream, &request)?["backup"].take())
        .map_err(|e| format!("unreadable answer from the server: {e}"))
}

/// Asks the server for the NDJSON export and writes it to `out`, calling
/// `progress` with the lines written.
///
/// # Errors
/// The server's refusal or failure, a stream cut short, or a write error.
pub fn request_export(
    mut stream: StdStream,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<ExportReport, String> {
    send(&mut stream, &Request::Export)?;
    let mut input = BufReader::with_capacity(1 << 20, stream);
    let mut line = Vec::new();
    let read = |input: &mut BufReader<StdStream>, line: &mut Vec<u8>| {
        line.clear();
        input
            .read_until(b'\n', line)
            .map_err(|e| format!("the export was cut short: {e}"))
    };
    read(&mut input, &mut line)?;
    if let Some(error) = refused(&line) {
        return Err(error);
    }
    if line != b"{\"ok\":true}\n" {
        return Err("unexpected answer from the server".into());
    }
    // Each line is written once the next one has arrived: the last one is
    // the trailer, not data.
    let mut held: Vec<u8> = Vec::new();
    let mut lines = 0u64;
    loop {
        if read(&mut input, &mut line)? == 0 {
            return Err("the export was cut short (the server stopped?)".into());
        }
        if !held.is_empty() {
            out.write_all(&held)
                .map_err(|e| format!("cannot write the export: {e}"))?;
            lines += 1;
            if lines.is_multiple_of(10_000) {
                progress(lines);
            }
        }
        if !line.ends_with(b"\n") {
            return Err("the export was cut short".into());
        }
        if line.starts_with(b"{\"end\":") {
            let v: serde_json::Value =
                serde_json::from_slice(&line).map_err(|e| format!("unreadable trailer: {e}"))?;
            if v["end"] == "ok" {
                progress(lines);
                return serde_json::from_value(v["report"].clone())
                    .map_err(|e| format!("unreadable trailer: {e}"));
            }
            return Err(format!(
                "the export failed on the server: {}",
                v["error"].as_str().unwrap_or("unknown error")
            ));
        }
        std::mem::swap(&mut held, &mut line);
    }
}
