//! Group commit: every ingestion path that acknowledges a sender (webhooks,
//! pull mode) hands its events to one committer thread, which applies
//! whatever is queued in a single durable write transaction and then answers
//! each sender. Concurrent events share one fsync; a sender is answered only
//! after the transaction holding its events is committed.
//!
//! The committer owns no state beyond its queue: the store is the truth.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::apply::{Outcome, apply_event};
use super::workos::Event;
use crate::store::{Store, StoreError};

/// Jobs waiting for the committer at most; senders beyond wait for room.
const QUEUE_DEPTH: usize = 4096;

/// One sender's request: events to apply in order, and optionally the pull
/// cursor to store in the same transaction.
struct Job {
    events: Vec<Event>,
    cursor: Option<String>,
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
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Msg::Job(Job {
                events,
                cursor,
                reply,
            }))
            .await
            .map_err(|_| SubmitError::Stopped)?;
        Ok(answer.await.map_err(|_| SubmitError::Stopped)??)
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

fn apply_jobs(store: &Store, jobs: &[Job]) -> Result<Vec<Vec<Outcome>>, StoreError> {
    store.write(|tx| {
        let mut all = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut outcomes = Vec::with_capacity(job.events.len());
            for event in &job.events {
                outcomes.push(apply_event(tx, event)?);
            }
            if let Some(cursor) = &job.cursor {
                tx.set_events_cursor(cursor)?;
            }
            all.push(outcomes);
        }
        Ok(all)
    })
}

fn commit(store: &Store, batch: Vec<Job>) {
    match apply_jobs(store, &batch) {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
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
