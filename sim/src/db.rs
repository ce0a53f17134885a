//! The simulated database: one madsim node holding the reference
//! [`StoreModel`] behind a request/reply protocol over
//! [`madsim::net::Endpoint`] (payloads travel as `Box<dyn Any>`, nothing is
//! serialized), and [`NetStore`], the node-side client implementing the
//! driver's [`Store`] trait.
//!
//! ```text
//!  node: driver ─▶ NetStore.execute ─(send_to_raw, id)─▶ db: sleep(latency) ─▶ StoreModel.apply(store clock)
//!                    ▲   timeout → StoreFailure                 │  records grants and fires in the oracle
//!                    └──────────────(send_to_raw, id)───────────┘
//! ```
//!
//! The model lives in the supervisor's [`World`] (not on the database node),
//! so checkers can read it at any time and it survives every fault. The
//! database judges time by its own clock: true time plus a fixed offset. It
//! can be slowed (each operation waits a random time up to the current
//! latency, so replies reorder) or made unreachable (its node is clogged).
//! A timed-out operation may still apply later, as with a real database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use madsim::net::Endpoint;
use minoots_core::error::StoreReject;
use minoots_core::event::OutboxEvent;
use minoots_core::quota::TenantUsage;
use minoots_core::store::{LEASE_SHARD, LeaseReply, StoreOp, StoreReply};
use minoots_core::time::WallMs;
use minoots_core::timer::TimerStatus;
use minoots_core::{StoreFailure, TenantId};
use minoots_node::Store;
use tokio::sync::oneshot;

use crate::clock::true_us;
use crate::oracle::{FencedSend, FireLog, LeaseGrant, LeaseInForce};
use crate::world::{Database, World};

/// Where the database listens.
pub const DB_IP: [u8; 4] = [10, 0, 0, 100];
/// Its port.
pub const DB_PORT: u16 = 7_000;
/// How long a node waits for any database reply before reporting a failure.
pub const STORE_TIMEOUT_MS: u64 = 1_000;
/// Most operations one node may have waiting for a reply.
const PENDING_MAX: usize = 1_024;

const TAG_REQUEST: u64 = 0x4d49_4e4f_0001;
const TAG_REPLY: u64 = 0x4d49_4e4f_0002;

/// The database's address.
pub fn db_addr() -> SocketAddr {
    SocketAddr::from((DB_IP, DB_PORT))
}

/// What a node asks of the database.
#[derive(Debug)]
pub enum DbCall {
    /// One store operation.
    Op(StoreOp),
    /// Unpublished outbox rows after a sequence number.
    OutboxUnpublished {
        /// Exclusive lower bound.
        after_seq: u64,
        /// Page size.
        limit: u32,
    },
    /// Mark rows published up to a sequence number.
    MarkPublished {
        /// Inclusive upper bound.
        up_to_seq: u64,
    },
    /// Count scheduled timers.
    CountPending,
    /// Count one tenant's pending timers and those created since a day's start.
    TenantUsage {
        /// The tenant.
        tenant: TenantId,
        /// Start of the day, wall ms.
        day_start_ms: WallMs,
    },
}

/// The database's answer.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Moved once per operation; boxing would only add an allocation.
pub enum DbAnswer {
    /// To `Op`.
    Op(StoreReply),
    /// To `OutboxUnpublished`.
    Outbox(Vec<OutboxEvent>),
    /// To `MarkPublished`.
    Done,
    /// To `CountPending`.
    Count(u64),
    /// To `TenantUsage`.
    Usage(TenantUsage),
}

struct DbRequest {
    id: u64,
    call: DbCall,
}

struct DbReply {
    id: u64,
    answer: DbAnswer,
}

/// What one applied operation revealed, recorded in the oracle after the
/// database lock is released.
#[derive(Default)]
struct Observed {
    notes: Vec<String>,
    grant: Option<LeaseGrant>,
    fires: Vec<FireLog>,
    stale: u64,
    early: u64,
}

impl World {
    /// Applies one call at the database, now, and records what it revealed.
    fn apply_call(&self, call: DbCall) -> DbAnswer {
        let mut seen = Observed::default();
        let answer = {
            let mut db = self.db.lock().expect("db lock");
            let now = db.now_ms();
            match call {
                DbCall::Op(op) => {
                    let before = lease_shard(&op).and_then(|shard| db.lease(shard));
                    // A refused commit is a batch the engine must never send:
                    // the seed fails here, loudly.
                    let reply = db.model.apply(now, &op).unwrap_or_else(|e| {
                        panic!("the database refused an op the engine sent: {e}\n  op: {op:?}")
                    });
                    observe(&mut db, now, &op, &reply, before, &mut seen);
                    DbAnswer::Op(reply)
                }
                DbCall::OutboxUnpublished { after_seq, limit } => {
                    let from = after_seq.max(db.published_through);
                    let rows = db
                        .model
                        .outbox()
                        .iter()
                        .filter(|e| e.seq > from)
                        .take(limit as usize)
                        .cloned()
                        .collect();
                    DbAnswer::Outbox(rows)
                }
                DbCall::MarkPublished { up_to_seq } => {
                    db.published_through = db.published_through.max(up_to_seq);
                    DbAnswer::Done
                }
                DbCall::CountPending => DbAnswer::Count(
                    db.model.timers().values().filter(|t| t.status == TimerStatus::Scheduled).count() as u64,
                ),
                DbCall::TenantUsage { tenant, day_start_ms } => {
                    DbAnswer::Usage(db.model.tenant_usage(&tenant, day_start_ms))
                }
            }
        };
        if seen.grant.is_some()
            || !seen.fires.is_empty()
            || !seen.notes.is_empty()
            || seen.stale > 0
            || seen.early > 0
        {
            let mut oracle = self.oracle.lock().expect("oracle lock");
            for note in seen.notes {
                oracle.trace(note);
            }
            oracle.counters.stale_fires_rejected += seen.stale;
            oracle.counters.early_fires_rejected += seen.early;
            if let Some(grant) = seen.grant {
                let changed = grant.previous.as_ref().is_none_or(|p| p.holder != grant.lease.holder);
                let stolen = grant.previous.as_ref().is_some_and(|p| p.holder != grant.lease.holder);
                oracle.counters.leader_changes += u64::from(changed);
                oracle.counters.lease_steals += u64::from(stolen);
                oracle.trace(format!(
                    "db: lease shard {} epoch {} granted to {} until store {} (was {})",
                    grant.lease.shard,
                    grant.lease.epoch,
                    grant.lease.holder,
                    grant.lease.expires_store_ms,
                    grant.previous.as_ref().map_or("none".to_owned(), |p| format!(
                        "{} epoch {} until {}",
                        p.holder, p.epoch, p.expires_store_ms
                    ))
                ));
                oracle.grants.push(grant);
            }
            for log in seen.fires {
                oracle.counters.fires_recorded += 1;
                oracle.trace(format!(
                    "db: fire {}#{} recorded by {} epoch {} due {} at store {}",
                    log.fire.timer_id,
                    log.fire.occurrence,
                    log.fire.node_id,
                    log.fire.epoch,
                    log.fire.due_ms,
                    log.fire.fired_at_ms
                ));
                oracle.fires.push(log);
            }
        }
        answer
    }
}

/// Reads lease grants and commit outcomes out of one applied operation.
/// `before` is the operation's lease row as it stood just before it applied.
fn observe(
    db: &mut Database,
    now: WallMs,
    op: &StoreOp,
    reply: &StoreReply,
    before: Option<LeaseInForce>,
    seen: &mut Observed,
) {
    match (op, reply) {
        (StoreOp::Open { .. }, StoreReply::Opened { .. })
        | (StoreOp::AcquireLease { .. }, StoreReply::Lease(LeaseReply::Granted { .. })) => {
            let shard = match op {
                StoreOp::AcquireLease { shard, .. } => *shard,
                _ => LEASE_SHARD,
            };
            let lease = db.lease(shard).expect("a granted lease has a row");
            let asked_tenure = match op {
                StoreOp::AcquireLease { tenure, .. } => Some(*tenure),
                _ => None,
            };
            seen.grant =
                Some(LeaseGrant { lease, true_us: true_us(), store_ms: now, previous: before, asked_tenure });
        }
        (StoreOp::RenewLease { node_id, epoch, .. }, StoreReply::Lease(LeaseReply::Lost { holder })) => {
            seen.notes.push(format!(
                "db: {node_id} renewal of epoch {epoch} refused: lease lost (now {})",
                holder.as_ref().map_or("free".to_owned(), |h| format!("{} epoch {}", h.node_id, h.epoch))
            ));
        }
        (StoreOp::Commit(batch), StoreReply::Committed { outcome, .. }) => {
            for (record, result) in batch.creates.iter().zip(&outcome.creates) {
                let key = record.idempotency_key.as_deref().unwrap_or("-");
                seen.notes.push(match result {
                    Ok(created) if created.created => {
                        format!("db: {} created {} (key {key})", batch.node_id, record.id)
                    }
                    Ok(created) => {
                        format!("db: {} create of key {key} matched {}", batch.node_id, created.timer.id)
                    }
                    Err(e) => format!("db: {} create {} (key {key}) refused: {e}", batch.node_id, record.id),
                });
            }
            for (cancel, result) in batch.cancels.iter().zip(&outcome.cancels) {
                seen.notes.push(match result {
                    Ok(timer) => format!(
                        "db: {} epoch {} cancel {} -> {}",
                        batch.node_id,
                        batch.epoch,
                        cancel.timer_id,
                        timer.status.as_str()
                    ),
                    Err(e) => format!(
                        "db: {} epoch {} cancel {} refused: {e}",
                        batch.node_id, batch.epoch, cancel.timer_id
                    ),
                });
            }
            for (op, result) in batch.fires.iter().zip(&outcome.fires) {
                if let Err(e) = result
                    && !matches!(e, StoreReject::TooEarly { .. })
                {
                    seen.notes.push(format!(
                        "db: {} epoch {} fire {}#{} due {} refused: {e}",
                        batch.node_id, batch.epoch, op.timer_id, op.occurrence, op.due_ms
                    ));
                }
                match result {
                    Ok(fired) => {
                        if let Some(fire) = &fired.fire {
                            let lease = db.fencing_lease();
                            seen.fires.push(FireLog { fire: fire.clone(), true_us: true_us(), lease });
                        }
                    }
                    Err(StoreReject::StaleEpoch { .. }) => seen.stale += 1,
                    Err(StoreReject::TooEarly { .. }) => seen.early += 1,
                    Err(_) => {}
                }
            }
        }
        _ => {}
    }
}

/// The lease row an operation may change.
fn lease_shard(op: &StoreOp) -> Option<u32> {
    match op {
        StoreOp::Open { .. } => Some(LEASE_SHARD),
        StoreOp::AcquireLease { shard, .. } | StoreOp::RenewLease { shard, .. } => Some(*shard),
        _ => None,
    }
}

/// The database node's main task: answers requests until the run ends.
pub async fn serve(world: Arc<World>) {
    let endpoint = Arc::new(Endpoint::bind(db_addr()).await.expect("the database binds its address"));
    loop {
        let Ok((payload, from)) = endpoint.recv_from_raw(TAG_REQUEST).await else {
            continue;
        };
        let Ok(request) = payload.downcast::<DbRequest>() else {
            continue;
        };
        let latency_max_ms = world.db.lock().expect("db lock").latency_max_ms;
        let latency_ms =
            if latency_max_ms == 0 { 0 } else { madsim::rand::random::<u64>() % (latency_max_ms + 1) };
        let world = world.clone();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            if latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(latency_ms)).await;
            }
            let DbRequest { id, call } = *request;
            let answer = world.apply_call(call);
            // A clogged link drops the reply; the node times out.
            let _ = endpoint.send_to_raw(from, TAG_REPLY, Box::new(DbReply { id, answer })).await;
        });
    }
}

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<DbAnswer>>>>;

/// A node's connection to the database: the driver's [`Store`].
pub struct NetStore {
    world: Arc<World>,
    node: String,
    endpoint: Arc<Endpoint>,
    pending: Pending,
    next_id: AtomicU64,
    timeout: Duration,
}

impl NetStore {
    /// Binds an endpoint on the current node and starts the reply dispatcher
    /// (a task of this node: it dies with the process). Request ids start at
    /// `incarnation << 40`: a restarted process may get its predecessor's
    /// port, and a late reply to the predecessor must not match a request of
    /// its own.
    pub async fn connect(world: Arc<World>, node: String, incarnation: u64) -> NetStore {
        let endpoint = Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("a node binds an ephemeral port"));
        let pending: Pending = Arc::default();
        let (rx_endpoint, rx_pending) = (endpoint.clone(), pending.clone());
        tokio::spawn(async move {
            loop {
                let Ok((payload, _)) = rx_endpoint.recv_from_raw(TAG_REPLY).await else {
                    continue;
                };
                let Ok(reply) = payload.downcast::<DbReply>() else {
                    continue;
                };
                let waiter = rx_pending.lock().expect("pending lock").remove(&reply.id);
                if let Some(tx) = waiter {
                    let _ = tx.send(reply.answer);
                }
            }
        });
        NetStore {
            world,
            node,
            endpoint,
            pending,
            next_id: AtomicU64::new((incarnation << 40) | 1),
            timeout: Duration::from_millis(STORE_TIMEOUT_MS),
        }
    }

    async fn call(&self, call: DbCall) -> Result<DbAnswer, StoreFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.len() >= PENDING_MAX {
                return Err(StoreFailure::Unknown("too many database operations waiting".into()));
            }
            pending.insert(id, tx);
        }
        let sent = self.endpoint.send_to_raw(db_addr(), TAG_REQUEST, Box::new(DbRequest { id, call })).await;
        let result = match sent {
            Err(e) => Err(StoreFailure::Unknown(format!("database unreachable: {e}"))),
            Ok(()) => match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(StoreFailure::Unknown("database reply lost".into())),
                Err(_) => Err(StoreFailure::Unknown(format!(
                    "database timeout after {} ms",
                    self.timeout.as_millis()
                ))),
            },
        };
        if result.is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
        }
        result
    }

    fn record_send(&self, op: &StoreOp) {
        if let StoreOp::Commit(batch) = op {
            if batch.fires.is_empty() && batch.cancels.is_empty() {
                return;
            }
            let send = FencedSend {
                node_id: batch.node_id.clone(),
                epoch: batch.epoch,
                true_us: true_us(),
                fires: batch.fires.len(),
                cancels: batch.cancels.len(),
            };
            self.world.oracle.lock().expect("oracle lock").sends.push(send);
        }
    }
}

/// A short description of a write, for the history (reads are not traced).
fn describe(op: &StoreOp) -> Option<String> {
    match op {
        StoreOp::Commit(b) => Some(format!(
            "commit epoch {} ({} creates, {} cancels, {} fires)",
            b.epoch,
            b.creates.len(),
            b.cancels.len(),
            b.fires.len()
        )),
        StoreOp::Open { .. } => Some("open".to_owned()),
        StoreOp::AcquireLease { .. } => Some("acquire lease".to_owned()),
        StoreOp::RenewLease { epoch, .. } => Some(format!("renew lease epoch {epoch}")),
        StoreOp::LoadDue { .. } => Some("load".to_owned()),
        _ => None,
    }
}

fn unexpected(answer: DbAnswer) -> StoreFailure {
    StoreFailure::Unknown(format!("the database answered out of protocol: {answer:?}"))
}

impl Store for NetStore {
    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        Box::pin(async move {
            self.record_send(&op);
            let what = describe(&op);
            let result = match self.call(DbCall::Op(op)).await {
                Ok(DbAnswer::Op(reply)) => Ok(reply),
                Ok(other) => Err(unexpected(other)),
                Err(e) => Err(e),
            };
            if let (Err(e), Some(what)) = (&result, what) {
                self.world.trace(format!("{}: {what} failed: {}", self.node, e.detail()));
            }
            result
        })
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        Box::pin(async move {
            match self.call(DbCall::OutboxUnpublished { after_seq, limit }).await? {
                DbAnswer::Outbox(rows) => Ok(rows),
                other => Err(unexpected(other)),
            }
        })
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(async move {
            match self.call(DbCall::MarkPublished { up_to_seq }).await? {
                DbAnswer::Done => Ok(()),
                other => Err(unexpected(other)),
            }
        })
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        Box::pin(async move {
            match self.call(DbCall::CountPending).await? {
                DbAnswer::Count(n) => Ok(n),
                other => Err(unexpected(other)),
            }
        })
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a TenantId,
        day_start_ms: WallMs,
    ) -> BoxFuture<'a, Result<TenantUsage, StoreFailure>> {
        Box::pin(async move {
            match self.call(DbCall::TenantUsage { tenant: tenant.clone(), day_start_ms }).await? {
                DbAnswer::Usage(usage) => Ok(usage),
                other => Err(unexpected(other)),
            }
        })
    }
}
