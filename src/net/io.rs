//! [`ConnIo`]: an accepted socket as hyper sees it. It owns three things
//! hyper does not do for us: the JSON body of hyper's own error answers, the
//! write-stall cut-off, and a lingering close after such an error answer.
//!
//! It must not parse requests or look inside rollcall's own responses: the
//! only bytes it ever replaces are hyper's bare error head (see
//! [`json_error_for`]), which no rollcall response can resemble because
//! every one of them carries a `content-type`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::sendfile::{FileQueue, is_placeholder};
use super::tls::Stream;
use crate::api::ApiError;

/// How long, at most, an error answer's connection keeps reading (and
/// discarding) what the client still sends before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much, at most, is read and discarded while lingering.
const LINGER_BYTES: usize = 1024 * 1024;

/// The accepted socket, wrapped (then handed to hyper in a `TokioIo`).
pub struct ConnIo {
    inner: Stream,
    /// A write that makes no progress for this long fails with `TimedOut`.
    stall: Duration,
    /// The stall (and linger) timer, created on first need and reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` currently counts a stalled write.
    armed: bool,
    /// Our JSON answer standing in for hyper's bare one, and how much of it
    /// is written.
    reply: Option<(Vec<u8>, usize)>,
    linger: Linger,
    /// Where file bodies queue what their placeholders stand for (plain
    /// connections that can `sendfile`).
    files: Option<Arc<FileQueue>>,
}

/// The lingering close after an error answer: hyper closes the connection
/// right after it, and closing a socket with unread input makes the kernel
/// send a reset, which can destroy the answer before the client reads it.
/// So the write side is shut first and the input drained (bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linger {
    /// No error answer was written: shut down normally.
    Off,
    /// An error answer was written; linger on shutdown.
    Armed,
    /// Reading and discarding; so many bytes so far.
    Draining(usize),
    Done,
}

impl ConnIo {
    /// Wraps `inner`; a pending write stalled for `stall` fails. File
    /// bodies' placeholders are sent from the files `files` queues.
    pub fn new(inner: Stream, stall: Duration, files: Option<Arc<FileQueue>>) -> Self {
        Self {
            inner,
            stall,
            timer: None,
            armed: false,
            reply: None,
            linger: Linger::Off,
            files,
        }
    }

    /// Sends the file stretch the placeholder `slice` stands for.
    fn send_file(&mut self, cx: &mut Context<'_>, slice: &[u8]) -> Poll<io::Result<usize>> {
        let res = match (&self.files, &self.inner) {
            (Some(files), Stream::Plain(socket)) => files.poll_send(cx, socket, slice),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a file body reached a connection that cannot send files",
            ))),
        };
        self.after_write(cx, res)
    }

    /// The timer, reset to fire at `deadline`.
    fn timer_at(&mut self, deadline: Instant) -> Pin<&mut Sleep> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().reset(deadline);
        timer.as_mut()
    }

    /// Accounts for one write attempt on the socket: progress disarms the
    /// stall timer, a write that must wait arms it (once) and fails once it
    /// has fired.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match res {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.armed = false;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = Instant::now() + self.stall;
                    self.timer_at(deadline);
                }
                // Polling the timer registers this task with it, so the
                // connection is woken when it fires even if the peer never
                // makes the socket writable again.
                let fired = match self.timer.as_mut() {
                    Some(timer) => timer.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if fired {
                    tracing::debug!(stall = ?self.stall, "write stalled; closing the connection");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    /// Writes what is left of our error answer, if any.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, mut at)) = self.reply.take() else {
            return Poll::Ready(Ok(()));
        };
        while at < bytes.len() {
            let res = Pin::new(&mut self.inner).poll_write(cx, &bytes[at..]);
            match self.after_write(cx, res) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.reply = Some((bytes, at));
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `reply` in place of the `consumed` bytes hyper asked to write.
    fn answer(
        &mut self,
        cx: &mut Context<'_>,
        reply: Vec<u8>,
        consumed: usize,
    ) -> Poll<io::Result<usize>> {
        self.reply = Some((reply, 0));
        self.linger = Linger::Armed;
        // What does not go out now goes out on the next write, flush or
        // shutdown; hyper flushes right after an error answer.
        match self.poll_reply(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(consumed)),
        }
    }

    /// Reads and discards input until the client closes, the budget is
    /// spent or the linger time is over.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 4096];
        loop {
            match self.linger {
                Linger::Off | Linger::Done => return Poll::Ready(()),
                Linger::Armed => {
                    if let Err(e) = ready!(Pin::new(&mut self.inner).poll_shutdown(cx)) {
                        tracing::debug!(error = %e, "shutting down after an error answer");
                        self.linger = Linger::Done;
                        continue;
                    }
                    self.armed = false;
                    self.timer_at(Instant::now() + LINGER_TIME);
                    self.linger = Linger::Draining(0);
                }
                Linger::Draining(discarded) => {
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            let discarded = discarded + buf.filled().len();
                            self.linger = if discarded > LINGER_BYTES {
                                Linger::Done
                            } else {
                                Linger::Draining(discarded)
                            };
                        }
                        // The client closed (or reset): nothing left to protect.
                        Poll::Ready(_) => self.linger = Linger::Done,
                        Poll::Pending => {
                            let over = match self.timer.as_mut() {
                                Some(timer) => timer.as_mut().poll(cx).is_ready(),
                                None => true,
                            };
                            if !over {
                                return Poll::Pending;
                            }
                            self.linger = Linger::Done;
                        }
                    }
                }
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if is_placeholder(buf) {
            return this.send_file(cx, buf);
        }
        if let Some(reply) = json_error_for(buf) {
            return this.answer(cx, reply, buf.len());
        }
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, res)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        // A file body's placeholder is sent on its own; what comes before
        // one is written as bytes, up to it.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && is_placeholder(first)
        {
            return this.send_file(cx, first);
        }
        let bufs = &bufs[..bufs
            .iter()
            .position(|b| is_placeholder(b))
            .unwrap_or(bufs.len())];
        // hyper's error head is always written alone, as one slice.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && let Some(reply) = json_error_for(only)
        {
            return this.answer(cx, reply, only.len());
        }
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if this.linger == Linger::Off {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        ready!(this.poll_linger(cx));
        Poll::Ready(Ok(()))
    }
}

/// The JSON answer standing in for `head` when `head` is one of hyper's own
/// bare error answers (written before any service runs, for a request head
/// it could not parse or that is over the limits), else `None`.
///
/// hyper's answer is exactly a 4xx status line and `connection`,
/// `content-length: 0` and `date` headers; anything else — another header,
/// a body, a `content-type` (which every rollcall response has) — is left
/// alone. The replacement keeps the status and the date, and closes the
/// connection as hyper does.
pub fn json_error_for(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap rejections first: this runs on every write.
    if head.len() > 256 || !(head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let error = match status_line.get(9..13)? {
        "400 " => ApiError::validation("request", "is not well-formed HTTP/1.1"),
        "431 " => ApiError::HeaderFieldsTooLarge,
        _ => return None,
    };
    let mut date = None;
    let mut empty_body = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => empty_body = true,
            "connection" if value.trim().eq_ignore_ascii_case("close") => {}
            "date" => date = Some(line),
            _ => return None,
        }
    }
    if !empty_body {
        return None;
    }
    let body = error.json_body();
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(date) = date {
        out.push_str(date);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Tue, 03 Mar 2026 10:00:00 GMT";

    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(answer.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn hypers_bare_400_becomes_the_json_error_shape() {
        let bare = format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
        );
        let answer = json_error_for(bare.as_bytes()).expect("replaced");
        let (head, body) = split(&answer);
        let len = serde_json::to_vec(&body).unwrap().len();
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {len}\r\n{DATE}"
            )
        );
        assert_eq!(
            body,
            serde_json::json!({"code": "BAD_REQUEST", "status": 400,
                "message": "Invalid request: is not well-formed HTTP/1.1",
                "data": {"code": "VALIDATION_ERROR", "field": "request"}})
        );
    }

    #[test]
    fn hypers_bare_431_becomes_the_json_error_shape() {
        let bare = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
        );
        let (head, body) = split(&json_error_for(bare.as_bytes()).expect("replaced"));
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert_eq!(body["code"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
        assert_eq!(body["status"], 431);
        assert_eq!(
            body["data"],
            serde_json::json!({"code": "REQUEST_HEADER_FIELDS_TOO_LARGE"})
        );
    }

    #[test]
    fn anything_else_is_left_alone() {
        for other in [
            // rollcall's own answers: a content-type, a body.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            // Not an error, or not one hyper writes.
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            // Another header, a non-empty length, no length, a body after it.
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\nallow: GET\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            // A fragment of a body that happens to start like a head.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(json_error_for(other.as_bytes()), None, "{other:?}");
        }
    }
}
