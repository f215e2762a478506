//! [`Spread`]: keeps the event loops evenly loaded. All loops accept on one
//! shared listening socket, and whichever wakes first takes the connection,
//! so without this the connections of a burst (a load balancer's pool, wrk's
//! `-c32`) can all land on one loop while the others idle. A loop that
//! accepts a connection while holding more connections than another loop
//! hands it to the least-loaded loop instead (one cross-thread wake-up per
//! such connection, none per request).
//!
//! It must not decide whether a connection is admitted (that is
//! [`super::cap`]'s) nor touch a connection after handing it over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::cap::Admitted;

/// A connection on its way to another loop, with everything it holds.
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub admitted: Admitted,
    pub load: Load,
}

/// The live connections of every loop, and a way into each loop.
pub struct Spread {
    loads: Arc<[AtomicUsize]>,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
}

/// One connection counted on one loop, until dropped.
pub struct Load {
    loads: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(load) = self.loads.get(self.index) {
            load.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Spread {
    /// A spread over `n` loops and each loop's inbox (index = loop).
    pub fn new(n: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers) = (0..n.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        let loads = (0..n.max(1)).map(|_| AtomicUsize::new(0)).collect();
        (Arc::new(Self { loads, inboxes }), receivers)
    }

    /// Counts one connection on loop `index`.
    pub fn claim(&self, index: usize) -> Load {
        if let Some(load) = self.loads.get(index) {
            load.fetch_add(1, Ordering::AcqRel);
        }
        Load {
            loads: self.loads.clone(),
            index,
        }
    }

    /// Where a connection accepted by loop `here` should be served: `here`
    /// unless another loop has fewer connections. The chosen loop's count
    /// is taken at once, so a burst spreads evenly.
    pub fn place(&self, here: usize) -> (usize, Load) {
        let count = |i: usize| {
            self.loads
                .get(i)
                .map_or(usize::MAX, |l| l.load(Ordering::Acquire))
        };
        let mine = count(here);
        let least = (0..self.loads.len())
            .min_by_key(|&i| count(i))
            .filter(|&i| count(i) < mine)
            .unwrap_or(here);
        (least, self.claim(least))
    }

    /// Sends `handoff` to loop `to`.
    ///
    /// # Errors
    /// The handoff back when that loop has stopped taking connections.
    pub fn hand_to(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        match self.inboxes.get(to) {
            Some(inbox) => inbox.send(handoff).map_err(|e| e.0),
            None => Err(handoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_spreads_evenly_whoever_accepts_it() {
        let (spread, _inboxes) = Spread::new(2);
        // Loop 0 wins every accept race.
        let mut placed: Vec<(usize, Load)> = (0..32).map(|_| spread.place(0)).collect();
        assert_eq!(placed.iter().filter(|(i, _)| *i == 0).count(), 16);
        // Loop 1's connections end: the next ones go there.
        placed.retain(|(i, _)| *i == 0);
        assert_eq!(spread.place(0).0, 1);
    }

    #[test]
    fn a_loop_keeps_what_it_accepts_unless_another_has_fewer() {
        let (spread, _inboxes) = Spread::new(3);
        let _on_one = spread.claim(1);
        let _on_two = spread.claim(2);
        // Loop 0 has the fewest: it keeps what it accepts.
        let (to, _kept) = spread.place(0);
        assert_eq!(to, 0);
        // Every loop has one: each keeps its own.
        let (to, _kept_too) = spread.place(1);
        assert_eq!(to, 1);
        // Loop 1 has two now, the others one: it hands the next one over.
        let (to, _handed) = spread.place(1);
        assert_ne!(to, 1);
    }
}
