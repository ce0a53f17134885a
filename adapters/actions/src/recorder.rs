//! The attempt recorder: finished attempts are recorded in group commits.
//!
//! Recording an attempt (the delivery's new state, the history row, the
//! dead letter) must be durable before the runner acts on it, and one
//! transaction per attempt — a commit and a few statements each, every one
//! a round trip to the embedded store's single connection — was what held
//! the standalone runner near a thousand webhooks a second. The recorder runs one transaction at a time
//! for every attempt that finished while the previous one committed (at
//! most [`GROUP_MAX`]): the first attempt after a quiet spell is recorded
//! at once, and under load each commit serves many. A group that fails is
//! retried one attempt per transaction, so an attempt the store refuses
//! fails alone.

use tokio::sync::{mpsc, oneshot};

use crate::store::{ActionStore, AttemptRecord, AttemptToRecord, NewDelivery, NextStep, StoreError};

/// Most attempts recorded in one transaction.
pub const GROUP_MAX: usize = 512;

/// Why an attempt was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RecordFailed {
    /// The action store failed (the operator's database).
    #[error("{0}")]
    Store(String),
    /// The recording task is gone (the runner is stopping).
    #[error("the attempt recorder has stopped")]
    Stopped,
}

/// One attempt waiting to be recorded, with where its result goes.
struct Job {
    delivery: NewDelivery,
    attempt: AttemptRecord,
    next: NextStep,
    now_ms: i64,
    reply: oneshot::Sender<Result<Option<u32>, RecordFailed>>,
}

impl Job {
    fn entry(&self) -> AttemptToRecord<'_> {
        AttemptToRecord {
            delivery: &self.delivery,
            attempt: &self.attempt,
            next: self.next,
            now_ms: self.now_ms,
        }
    }
}

/// Hands attempts to the recording task.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("key", &self.delivery.idempotency_key).finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder over `store` and the task that records; the task ends
    /// once every [`Recorder`] is dropped.
    pub(crate) fn start(store: ActionStore) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(GROUP_MAX);
        (Self { jobs }, tokio::spawn(record_groups(store, queue)))
    }

    /// Records one attempt and what follows it (see
    /// [`ActionStore::record_attempt`]): the attempt's number, or `None`
    /// when the delivery was no longer pending.
    pub(crate) async fn record(
        &self,
        delivery: &NewDelivery,
        attempt: &AttemptRecord,
        next: NextStep,
        now_ms: i64,
    ) -> Result<Option<u32>, RecordFailed> {
        let (reply, result) = oneshot::channel();
        let job = Job { delivery: delivery.clone(), attempt: attempt.clone(), next, now_ms, reply };
        self.jobs.send(job).await.map_err(|_| RecordFailed::Stopped)?;
        result.await.map_err(|_| RecordFailed::Stopped)?
    }
}

async fn record_groups(store: ActionStore, mut queue: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while queue.recv_many(&mut group, GROUP_MAX).await > 0 {
        let entries: Vec<AttemptToRecord<'_>> = group.iter().map(Job::entry).collect();
        let results = store.record_attempts(&entries).await;
        drop(entries);
        match results {
            Ok(numbers) => {
                for (job, number) in group.drain(..).zip(numbers) {
                    let _ = job.reply.send(Ok(number));
                }
            }
            Err(e) if group.len() == 1 => {
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(failed(&e)));
                }
            }
            Err(_) => {
                for job in group.drain(..) {
                    let result = store.record_attempts(&[job.entry()]).await;
                    let _ = job.reply.send(result.map(|mut n| n.pop().flatten()).map_err(|e| failed(&e)));
                }
            }
        }
    }
}

fn failed(error: &StoreError) -> RecordFailed {
    RecordFailed::Store(error.to_string())
}
