//! Stream slots shared fairly between organizations.
//!
//! A long list answer holds a slot for as long as its client reads (a
//! blocking thread, a few chunk buffers, an open body file). Slots are few,
//! so one organization must not be able to take them all: each may hold at
//! most its share at once, and a request waits for a slot a bounded time,
//! then gets a 503 with `Retry-After` instead of silence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Bounded, per-organization-fair slots.
pub struct StreamSlots {
    total: Arc<Semaphore>,
    capacity: usize,
    per_org: usize,
    held: Mutex<HashMap<String, usize>>,
    /// Woken whenever an organization gives a slot back.
    released: Notify,
    wait: Duration,
}

/// A slot; given back when dropped.
pub struct Slot {
    slots: Arc<StreamSlots>,
    org: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(&self.org);
    }
}

/// No slot became free within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSlot;

impl StreamSlots {
    /// `total` slots, at most `per_org` of them held by one organization,
    /// waiting at most `wait` for one.
    pub fn new(total: usize, per_org: usize, wait: Duration) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total.max(1))),
            capacity: total.max(1),
            per_org: per_org.clamp(1, total.max(1)),
            held: Mutex::new(HashMap::new()),
            released: Notify::new(),
            wait,
        }
    }

    /// Slots held now, all organizations.
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.total.available_permits())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns one of `org`'s share and wakes the waiters.
    fn give_back(&self, org: &str) {
        let mut held = self.lock();
        if let Some(n) = held.get_mut(org) {
            *n -= 1;
            if *n == 0 {
                held.remove(org);
            }
        }
        drop(held);
        self.released.notify_waiters();
    }

    /// A slot for `org`, waiting at most the configured time.
    ///
    /// # Errors
    /// [`NoSlot`] when neither the organization's share nor a global slot
    /// came free in time.
    pub async fn acquire(self: &Arc<Self>, org: &str) -> Result<Slot, NoSlot> {
        tokio::time::timeout(self.wait, self.acquire_unbounded(org))
            .await
            .ok()
            .flatten()
            .ok_or(NoSlot)
    }

    async fn acquire_unbounded(self: &Arc<Self>, org: &str) -> Option<Slot> {
        // First the organization's share, then a global slot: an
        // organization at its share never holds a global slot while waiting.
        loop {
            let released = self.released.notified();
            {
                let mut held = self.lock();
                let n = held.entry(org.to_owned()).or_insert(0);
                if *n < self.per_org {
                    *n += 1;
                    break;
                }
            }
            released.await;
        }
        // The share is counted from here on: the guard gives it back if
        // this future is dropped (the wait timed out) before a global slot.
        let mut share = ShareGuard {
            slots: self,
            org,
            armed: true,
        };
        let permit = self.total.clone().acquire_owned().await.ok()?;
        share.armed = false;
        Some(Slot {
            slots: self.clone(),
            org: org.to_owned(),
            _permit: permit,
        })
    }

    /// Slots held by `org` right now (for tests and logs).
    pub fn held_by(&self, org: &str) -> usize {
        self.lock().get(org).copied().unwrap_or(0)
    }
}

struct ShareGuard<'a> {
    slots: &'a StreamSlots,
    org: &'a str,
    armed: bool,
}

impl Drop for ShareGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.slots.give_back(self.org);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_organization_cannot_take_every_slot_and_waits_are_bounded() {
        let slots = Arc::new(StreamSlots::new(4, 2, Duration::from_millis(100)));
        let a1 = slots.acquire("org_a").await.unwrap();
        let _a2 = slots.acquire("org_a").await.unwrap();
        assert_eq!(
            slots.acquire("org_a").await.err(),
            Some(NoSlot),
            "A's share is 2"
        );
        assert_eq!(
            slots.held_by("org_a"),
            2,
            "the refused wait gave nothing away"
        );
        let _b1 = slots.acquire("org_b").await.unwrap();
        let _b2 = slots.acquire("org_b").await.unwrap();
        assert_eq!(
            slots.acquire("org_c").await.err(),
            Some(NoSlot),
            "all 4 taken"
        );
        assert_eq!(
            slots.held_by("org_c"),
            0,
            "a timed-out wait returns its share"
        );
        drop(a1);
        let c = slots.acquire("org_c").await.unwrap();
        assert_eq!(slots.held_by("org_c"), 1);
        drop(c);
        assert_eq!(slots.held_by("org_c"), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_given_back() {
        let slots = Arc::new(StreamSlots::new(1, 1, Duration::from_secs(5)));
        let held = slots.acquire("org_a").await.unwrap();
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire("org_a").await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
