//! [`ReplicatedStore`]: the driver's `Store` and `KeyStore` in Raft mode.
//! Every write — a group commit, an outbox mark, a key or quota change — is
//! proposed as one log entry and answered only once that entry is committed
//! by a quorum and applied here; every read goes to this node's applied
//! state (as fresh as this node has applied: a follower may be a few
//! entries behind the leader), once this node has caught up with the
//! cluster after it started — before, reads are refused as retryable.
//!
//! A commit is stamped with the proposer's wall clock, and the state machine
//! decides it at that stamp on every node: a fire is recorded only if the
//! leader's clock had reached its due time when it proposed ("never early"
//! in this mode is by the leader's clock, as in standalone mode by the
//! node's).
//!
//! Failures by what applied: a proposal refused because this node does not
//! lead applied nothing (`NotSent`); one that did not finish in
//! `propose_timeout_ms` or hit a fatal Raft error may still commit
//! (`Unknown`, after which the engine steps down and reloads).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::quota::{QuotaLimits, TenantUsage};
use minoots_core::store::{StoreOp, StoreReply};
use minoots_core::{StoreFailure, TenantId, WallMs};
use minoots_node::clock::Clock;
use minoots_node::keys::{ApiKeyRecord, KeyStore};
use minoots_node::store::Store;
use minoots_store::SqliteStore;
use openraft::error::{ClientWriteError, RaftError};

use crate::types::{RaftNode, ReplicatedReply, ReplicatedWrite};

/// The Raft mode's store.
pub struct ReplicatedStore {
    raft: RaftNode,
    state: Arc<SqliteStore>,
    clock: Arc<dyn Clock>,
    propose_timeout: Duration,
    /// Whether this node's state has caught up with the cluster since it
    /// started (see [`ReplicatedStore::mark_caught_up`]); reads are refused
    /// before, so that a node starting from nothing never answers "no such
    /// timer" or "unknown API key" for what the cluster holds.
    caught_up: AtomicBool,
}

impl ReplicatedStore {
    /// Writes through `raft`, reads from `state` (its applied state machine).
    pub fn new(
        raft: RaftNode,
        state: Arc<SqliteStore>,
        clock: Arc<dyn Clock>,
        propose_timeout_ms: u64,
    ) -> Self {
        Self {
            raft,
            state,
            clock,
            propose_timeout: Duration::from_millis(propose_timeout_ms),
            caught_up: AtomicBool::new(false),
        }
    }

    /// This node's state holds everything the cluster had committed when a
    /// leader first reached it (or it leads): from now on reads are served
    /// locally, as fresh as this node has applied.
    pub fn mark_caught_up(&self) {
        self.caught_up.store(true, Ordering::Relaxed);
    }

    /// Whether reads are served (see [`ReplicatedStore::mark_caught_up`]).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Refuses a read while this node has not caught up.
    fn readable(&self) -> Result<&SqliteStore, StoreFailure> {
        if self.is_caught_up() {
            Ok(&self.state)
        } else {
            Err(StoreFailure::NotSent(
                "this node is catching up with the cluster; retry, or ask the leader".to_owned(),
            ))
        }
    }

    /// Runs `read` on the local state, or refuses it while this node has
    /// not caught up (the `KeyStore` reads; `Store::execute` awaits
    /// [`ReplicatedStore::readable`] itself).
    fn gated<'a, T: Send + 'a>(
        &'a self,
        read: impl FnOnce(&'a SqliteStore) -> BoxFuture<'a, Result<T, StoreFailure>>,
    ) -> BoxFuture<'a, Result<T, StoreFailure>> {
        match self.readable() {
            Ok(state) => read(state),
            Err(refused) => Box::pin(std::future::ready(Err(refused))),
        }
    }

    /// This node's applied state.
    pub fn state(&self) -> &Arc<SqliteStore> {
        &self.state
    }

    /// Proposes `write` and waits until it is committed and applied here.
    pub async fn propose(&self, write: ReplicatedWrite) -> Result<ReplicatedReply, StoreFailure> {
        match tokio::time::timeout(self.propose_timeout, self.raft.client_write(write)).await {
            Err(_) => Err(StoreFailure::Unknown(format!(
                "no Raft commit within {} ms: it may still commit",
                self.propose_timeout.as_millis()
            ))),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(StoreFailure::NotSent(match forward.leader_id {
                    Some(leader) => format!("not the Raft leader (node {leader} is)"),
                    None => "not the Raft leader (none known)".to_owned(),
                }))
            }
            Ok(Err(other)) => Err(StoreFailure::Unknown(format!("Raft: {other}"))),
        }
    }

    fn now_ms(&self) -> WallMs {
        self.clock.now().wall_ms
    }
}

/// A reply that cannot answer what was proposed: a bug, never the client's.
fn unexpected(reply: ReplicatedReply) -> StoreFailure {
    StoreFailure::Unknown(format!("unexpected reply to a replicated write: {reply:?}"))
}

impl Store for ReplicatedStore {
    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        Box::pin(async move {
            match op {
                StoreOp::Commit(batch) => {
                    match self.propose(ReplicatedWrite::Commit { stamp_ms: self.now_ms(), batch }).await? {
                        ReplicatedReply::Committed(reply) => Ok(*reply),
                        ReplicatedReply::Refused(why) => Err(StoreFailure::Refused(why)),
                        other => Err(unexpected(other)),
                    }
                }
                StoreOp::Open { .. } | StoreOp::AcquireLease { .. } | StoreOp::RenewLease { .. } => {
                    Err(StoreFailure::NotSent(
                        "Raft mode: leadership comes from the election, not from a lease".to_owned(),
                    ))
                }
                read => self.readable()?.execute(read).await,
            }
        })
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        self.state.outbox_unpublished(after_seq, limit)
    }

    fn outbox_unpublished_seqs(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreFailure>> {
        self.state.outbox_unpublished_seqs(after_seq, limit)
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(async move {
            self.propose(ReplicatedWrite::MarkPublished { up_to_seq, stamp_ms: self.now_ms() })
                .await
                .map(|_| ())
        })
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        self.state.count_pending()
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a TenantId,
        day_start_ms: WallMs,
    ) -> BoxFuture<'a, Result<TenantUsage, StoreFailure>> {
        self.state.tenant_usage(tenant, day_start_ms)
    }
}

impl KeyStore for ReplicatedStore {
    fn find_key(&self, key_hash: &str) -> BoxFuture<'_, Result<Option<ApiKeyRecord>, StoreFailure>> {
        self.gated(|state| state.find_key(key_hash))
    }

    fn insert_key(&self, record: ApiKeyRecord, key_hash: String) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(
            async move { self.propose(ReplicatedWrite::InsertKey { record, key_hash }).await.map(|_| ()) },
        )
    }

    fn list_keys(
        &self,
        tenant_id: Option<TenantId>,
    ) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreFailure>> {
        self.gated(|state| state.list_keys(tenant_id))
    }

    fn revoke_key(&self, key_id: String, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreFailure>> {
        Box::pin(async move {
            match self.propose(ReplicatedWrite::RevokeKey { key_id, now_ms }).await? {
                ReplicatedReply::Revoked(found) => Ok(found),
                other => Err(unexpected(other)),
            }
        })
    }

    fn count_keys(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        self.state.count_keys()
    }

    fn tenant_quota<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> BoxFuture<'a, Result<QuotaLimits, StoreFailure>> {
        self.gated(|state| state.tenant_quota(tenant_id))
    }

    fn set_tenant_quota(
        &self,
        tenant_id: TenantId,
        limits: QuotaLimits,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(async move {
            self.propose(ReplicatedWrite::SetTenantQuota { tenant_id, limits, now_ms }).await.map(|_| ())
        })
    }
}
