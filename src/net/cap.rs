//! [`Connections`]: the connection cap, shared by every event loop. Below
//! the cap a new connection is admitted at once; at the cap the
//! connection idle longest (a keep-alive connection between requests, or
//! one still waiting for its first request head) is asked to close to make
//! room, instead of leaving the newcomer in the accept queue until some
//! connection's header timeout expires.
//!
//! Per-request bookkeeping is two atomic updates on the connection's own
//! state; the shared registry is locked once when a connection opens and
//! once when it closes, and scanned only at the cap. It must not close a
//! connection itself: it asks, and the connection shuts down gracefully
//! (hyper finishes any response in progress first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};

/// How long to wait for the connection asked to close before asking
/// another (it may have started a request meanwhile), and how often to
/// look again when every connection is busy.
const RETRY: Duration = Duration::from_millis(100);

/// Every open connection, and room for more.
pub struct Connections {
    slots: Arc<Semaphore>,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// What the cap knows about one connection.
pub struct ConnState {
    /// Requests in progress (at most one at a time with HTTP/1.1).
    in_flight: AtomicUsize,
    /// Milliseconds after the registry's epoch at which the connection
    /// last became idle (its opening, or the end of its last response).
    idle_since: AtomicU64,
    /// Set once the connection has been asked to close.
    closing: AtomicBool,
    close: Notify,
    epoch: Instant,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request arrived.
    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A response is done (or abandoned).
    pub fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// An admitted connection: its place under the cap and in the registry,
/// both given back on drop.
pub struct Admitted {
    id: u64,
    state: Arc<ConnState>,
    registry: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// The state its service updates.
    pub fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }

    /// Resolves when the cap asks this connection to close.
    pub async fn asked_to_close(&self) {
        self.state.close.notified().await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.registry.live().remove(&self.id);
    }
}

impl Connections {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        // The map stays consistent whatever panicked while holding it.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one more connection, making room at the cap by asking the
    /// connection idle longest to close. `None` once `stopped` turns true.
    pub async fn admit(self: &Arc<Self>, stopped: &mut watch::Receiver<bool>) -> Option<Admitted> {
        let permit = loop {
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => break permit,
                Err(TryAcquireError::Closed) => return None,
                Err(TryAcquireError::NoPermits) => {}
            }
            self.ask_idlest_to_close();
            tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => break permit,
                    Err(_) => return None,
                },
                () = tokio::time::sleep(RETRY) => {}
                _ = stopped.wait_for(|stop| *stop) => return None,
            }
        };
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            epoch: self.epoch,
        });
        state.idle_since.store(state.now_ms(), Ordering::Release);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live().insert(id, state.clone());
        Some(Admitted {
            id,
            state,
            registry: self.clone(),
            _permit: permit,
        })
    }

    /// Asks the connection idle longest (and not asked before) to close;
    /// false when every connection is busy.
    fn ask_idlest_to_close(&self) -> bool {
        let idlest = self
            .live()
            .values()
            .filter(|c| c.is_idle() && !c.closing.load(Ordering::Acquire))
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .cloned();
        match idlest {
            Some(conn) => {
                conn.closing.store(true, Ordering::Release);
                // A stored permit: the connection sees it even if it is not
                // waiting at this instant.
                conn.close.notify_one();
                tracing::debug!("at the connection cap: closing the connection idle longest");
                true
            }
            None => {
                tracing::debug!("at the connection cap with every connection busy");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_connection_idle_longest_is_asked_to_close() {
        let conns = Connections::new(3);
        let (_stop, mut stopped) = watch::channel(false);
        let first = conns.admit(&mut stopped).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = conns.admit(&mut stopped).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let third = conns.admit(&mut stopped).await.unwrap();
        // The oldest is busy; of the idle ones, the second is idle longest.
        first.state().begin_request();

        let mut fourth = Box::pin(async {
            let mut stopped = stopped.clone();
            conns.admit(&mut stopped).await
        });
        tokio::select! {
            () = second.asked_to_close() => {}
            _ = &mut fourth => panic!("admitted over the cap"),
        }
        assert!(!first.state.closing.load(Ordering::Acquire));
        assert!(!third.state.closing.load(Ordering::Acquire));
        drop(second);
        assert!(fourth.await.is_some(), "admitted once the second closed");
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_at_the_cap() {
        let conns = Connections::new(1);
        let (stop, mut stopped) = watch::channel(false);
        let only = conns.admit(&mut stopped).await.unwrap();
        only.state().begin_request();
        let waiting = tokio::spawn({
            let conns = conns.clone();
            async move { conns.admit(&mut stopped).await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        stop.send(true).unwrap();
        assert!(waiting.await.unwrap(), "gave up on stop");
    }
}
