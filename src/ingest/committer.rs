//! Group commit: every ingestion path that writes while the server runs
//! (webhooks, the events follower, backfill, reconcile) hands its work to
//! one committer thread, which applies
//! whatever is queued in a single durable write transaction and then answers
//! each sender. Concurrent events share one fsync; a sender is answered only
//! after the transaction holding its events is committed.
//!
//! The committer owns no state beyond its queue: the store is the truth.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::apply::{Listed, Outcome, apply_event, apply_listed};
use super::workos::Event;
use crate::metrics::METRICS;
use crate::store::{Store, StoreError, Tx};

/// Jobs waiting for the committer at most; senders beyond wait for room.
const QUEUE_DEPTH: usize = 4096;

/// What one sender asks to apply, in order, in one transaction: events,
/// then listed objects (backfill, reconcile), then the pull cursor and
/// named progress markers (`None` removes one) stored with them, then a
/// write of its own ([`Committer::run`]).
#[derive(Default)]
pub struct Work {
    pub events: Vec<Event>,
    pub items: Vec<Listed>,
    pub cursor: Option<String>,
    pub marks: Vec<(String, Option<Vec<u8>>)>,
    pub write: Option<WriteFn>,
}

/// A write run inside the committer's transaction. It may run more than
/// once (a failed batch is retried job by job, each time in a new
/// transaction), so it must not assume it runs only once; whatever it
/// refuses must be refused before it writes anything, as the transaction
/// it shares with other jobs is still committed.
pub type WriteFn = Box<dyn FnMut(&mut Tx<'_>) -> Result<(), StoreError> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
}

enum Msg {
    Job(Job),
    /// Finish what is queued, then stop.
    Stop,
}

/// The handle senders use; cloning it is cheap. The committer thread stops
/// on [`Committer::stop`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Msg>,
}

/// Why a submission was not committed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the committer has stopped")]
    Stopped,
}

impl Committer {
    /// Starts the committer thread. `max_batch` bounds how many jobs share a
    /// transaction (1 disables group commit, for comparison).
    pub fn start(store: Arc<Store>, max_batch: usize) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel::<Msg>(QUEUE_DEPTH);
        let max_batch = max_batch.max(1);
        let handle = std::thread::Builder::new()
            .name("rollcall-committer".into())
            .spawn(move || run(store, rx, max_batch))
            .expect("spawning the committer thread at startup");
        (Self { queue }, handle)
    }

    /// Applies `events` (and stores `cursor`) durably; returns one outcome
    /// per event once committed.
    ///
    /// # Errors
    /// A storage failure (nothing of this submission was written), or a
    /// committer that has stopped.
    pub async fn submit(
        &self,
        events: Vec<Event>,
        cursor: Option<String>,
    ) -> Result<Vec<Outcome>, SubmitError> {
        self.submit_work(Work {
            events,
            cursor,
            ..Work::default()
        })
        .await
    }

    /// Applies `work` durably; returns one outcome per event or object
    /// once committed.
    ///
    /// # Errors
    /// As [`Committer::submit`].
    pub async fn submit_work(&self, work: Work) -> Result<Vec<Outcome>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Msg::Job(Job { work, reply }))
            .await
            .map_err(|_| SubmitError::Stopped)?;
        Ok(answer.await.map_err(|_| SubmitError::Stopped)??)
    }

    /// Runs `write` in a durable transaction shared with whatever else is
    /// queued (group commit) and returns what it returned, once committed.
    /// `write` must refuse (return `Ok` with its refusal) before it writes
    /// anything: the transaction is committed with the other jobs' work.
    ///
    /// # Errors
    /// As [`Committer::submit`].
    pub async fn run<R: Send + 'static>(
        &self,
        mut write: impl FnMut(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, SubmitError> {
        let slot = Arc::new(std::sync::Mutex::new(None));
        let out = slot.clone();
        self.submit_work(Work {
            write: Some(Box::new(move |tx| {
                let r = write(tx)?;
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                Ok(())
            })),
            ..Work::default()
        })
        .await?;
        let result = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        result.ok_or(SubmitError::Stopped)
    }

    /// Asks the thread to commit what is queued and stop; later submissions
    /// fail with [`SubmitError::Stopped`].
    pub async fn stop(&self) {
        let _ = self.queue.send(Msg::Stop).await;
    }
}

fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Msg>, max_batch: usize) {
    let mut stopping = false;
    while !stopping {
        let Some(Msg::Job(first)) = rx.blocking_recv() else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit(&store, batch);
    }
    rx.close();
    // Anything that raced in after Stop is still committed, not dropped.
    let rest: Vec<Job> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|m| match m {
            Msg::Job(j) => Some(j),
            Msg::Stop => None,
        })
        .collect();
    if !rest.is_empty() {
        commit(&store, rest);
    }
}

fn apply_jobs(store: &Store, jobs: &mut [Job]) -> Result<Vec<Vec<Outcome>>, StoreError> {
    store.write(|tx| {
        let mut all = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            let work = &mut job.work;
            let mut outcomes = Vec::with_capacity(work.events.len() + work.items.len());
            for event in &work.events {
                outcomes.push(apply_event(tx, event)?);
            }
            for item in &work.items {
                outcomes.push(apply_listed(tx, item)?);
            }
            if let Some(cursor) = &work.cursor {
                tx.set_events_cursor(cursor)?;
            }
            for (name, value) in &work.marks {
                tx.set_mark(name, value.as_deref())?;
            }
            if let Some(write) = &mut work.write {
                write(tx)?;
            }
            all.push(outcomes);
        }
        Ok(all)
    })
}

fn commit(store: &Store, mut batch: Vec<Job>) {
    let started = std::time::Instant::now();
    let applied = apply_jobs(store, &mut batch);
    METRICS.commit(batch.len(), started.elapsed(), applied.is_ok());
    match applied {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                for (event, o) in job.work.events.iter().zip(&outcome) {
                    if *o == Outcome::Applied {
                        METRICS.event_applied(&event.event_type);
                    }
                }
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) if batch.len() > 1 => {
            // One job may be what failed (a record too large, say): retry
            // each alone so the others are not failed with it.
            tracing::warn!(error = %e, jobs = batch.len(), "group commit failed; retrying jobs one by one");
            for job in batch {
                commit(store, vec![job]);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed");
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
