//! Response bodies sent from a file with `sendfile(2)`: the kernel copies
//! the file's pages to the socket, and no byte of the body passes through
//! user space.
//!
//! hyper only knows bodies made of bytes in memory, so a file body reaches
//! it as **placeholders**: `Bytes` slices of one static, never-read region
//! ([`placeholder`]), each standing for a stretch of a file that the body
//! queued on its connection's [`FileQueue`] just before. hyper frames and
//! counts them like any bytes (`Content-Length`, chunking) and hands them to
//! the connection's writer, [`super::io::ConnIo`], which recognises a
//! placeholder by its address and sends the queued stretch of file in its
//! place ([`FileQueue::poll_send`]).
//!
//! Safety of the bytes on the wire rests on that check alone: a placeholder
//! whose position does not match the front of the queue — or one reaching a
//! connection without a queue (TLS, another platform) — fails the write and
//! closes the connection. The placeholder region itself is never sent.
//!
//! Only plain TCP connections on Linux get a queue (the request carries it
//! as an extension); everyone else gets bodies read into memory.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::net::TcpStream;

/// The most one placeholder (and so one queued stretch) stands for.
pub const MAX_STRETCH: usize = 4 * 1024 * 1024;

/// The placeholders' region: in the zero-initialised data segment, never
/// read or written, so it costs address space and no memory.
static REGION: [u8; MAX_STRETCH] = [0; MAX_STRETCH];

/// A file that can be sent from.
pub trait Source: Send + Sync {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl Source for std::fs::File {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}

/// One stretch of a file queued for a connection.
struct Stretch {
    source: Arc<dyn Source>,
    offset: u64,
    len: usize,
    /// How much of it is on the socket already.
    sent: usize,
}

/// The file stretches a connection's response bodies have queued, in the
/// order their placeholders will arrive at its writer.
#[derive(Default)]
pub struct FileQueue {
    stretches: Mutex<VecDeque<Stretch>>,
    /// Bytes sent from files on this connection so far.
    sent: std::sync::atomic::AtomicU64,
}

impl FileQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Stretch>> {
        self.stretches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `len` bytes of `source` from `offset` (at most
    /// [`MAX_STRETCH`]: a longer stretch is cut there) and returns the
    /// placeholder to hand to hyper in their place. Call it only when the
    /// placeholder goes to hyper at once: a stretch queued for a body hyper
    /// never takes would stay at the front of the queue.
    pub fn push(&self, source: Arc<dyn Source>, offset: u64, len: usize) -> Bytes {
        debug_assert!(len <= MAX_STRETCH, "a stretch over the placeholder region");
        let len = len.min(MAX_STRETCH);
        self.lock().push_back(Stretch {
            source,
            offset,
            len,
            sent: 0,
        });
        Bytes::from_static(&REGION[..len])
    }

    /// Bytes sent from files on this connection so far (what tells a slow
    /// reader from one that takes nothing).
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stretches queued and not yet fully sent.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Sends (part of) the stretch that `slice`, a placeholder, stands for
    /// onto `socket`; the count is of placeholder bytes consumed.
    ///
    /// # Errors
    /// `InvalidData` when `slice` is not where the front stretch has got
    /// to (never guess: the connection is closed instead); the socket's or
    /// the file's errors; `UnexpectedEof` when the file is shorter than
    /// queued.
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        socket: &TcpStream,
        slice: &[u8],
    ) -> Poll<io::Result<usize>> {
        let at = slice.as_ptr() as usize - REGION.as_ptr() as usize;
        let mut stretches = self.lock();
        let Some(front) = stretches.front_mut() else {
            return Poll::Ready(Err(out_of_step()));
        };
        if at != front.sent || slice.len() != front.len - front.sent {
            return Poll::Ready(Err(out_of_step()));
        }
        loop {
            std::task::ready!(socket.poll_write_ready(cx))?;
            let mut offset = front.offset + front.sent as u64;
            let want = front.len - front.sent;
            let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
                send(socket, front.source.fd(), &mut offset, want)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a body file is shorter than queued",
                    )));
                }
                Ok(n) => {
                    crate::metrics::METRICS.sent_file(n);
                    self.sent
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    front.sent += n;
                    if front.sent == front.len {
                        stretches.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn out_of_step() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a file body placeholder is out of step with its queue",
    )
}

#[cfg(target_os = "linux")]
fn send(
    socket: &TcpStream,
    file: std::os::fd::BorrowedFd<'_>,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    rustix::fs::sendfile(socket.as_fd(), file, Some(offset), count).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn send(
    _socket: &TcpStream,
    _file: std::os::fd::BorrowedFd<'_>,
    _offset: &mut u64,
    _count: usize,
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sendfile is only used on Linux",
    ))
}

/// Whether `slice` is (part of) a placeholder.
pub fn is_placeholder(slice: &[u8]) -> bool {
    let start = REGION.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    !slice.is_empty() && at >= start && at < start + MAX_STRETCH
}

/// Whether this platform's plain connections send file bodies with
/// `sendfile(2)`.
pub const SUPPORTED: bool = cfg!(target_os = "linux");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_by_address_only() {
        let queue = FileQueue::new();
        let file: Arc<dyn Source> = Arc::new(tempfile::tempfile().unwrap());
        let p = queue.push(file, 0, 10);
        assert_eq!(p.len(), 10);
        assert!(is_placeholder(&p));
        assert!(is_placeholder(&p[3..]));
        assert!(!is_placeholder(&[0u8; 10]), "zeros elsewhere are bytes");
        assert!(!is_placeholder(&p[..0]));
        assert_eq!(queue.pending(), 1);
    }
}
