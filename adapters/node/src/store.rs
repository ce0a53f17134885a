//! The store as the driver sees it: the engine's [`StoreOp`]s plus the outbox
//! and housekeeping calls the relay and metrics need. Implemented by the SQLite
//! store (`minoots-store`), by `minoots_testkit::model_store::ModelStore`, and by the
//! simulator's networked model.

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::quota::TenantUsage;
use minoots_core::store::{StoreOp, StoreReply};
use minoots_core::{StoreFailure, TenantId, WallMs};

/// Durable storage for timers, fires and the outbox.
///
/// Outbox sequence numbers are assigned in commit order (a row with a smaller
/// `seq` is visible no later than one with a larger `seq`): the relay marks
/// everything up to the last row a scan returned, which is only safe if no
/// smaller row can appear afterwards.
pub trait Store: Send + Sync + 'static {
    /// Runs one operation as one transaction (see `minoots_core::store` for semantics).
    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>>;

    /// Outbox rows not yet marked published with `seq > after_seq`, in order, at most `limit`.
    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>>;

    /// The sequence numbers of the rows [`Store::outbox_unpublished`] would
    /// return, without reading the events: what a relay scan reads first, so
    /// that rows it has already sent are not decoded again.
    fn outbox_unpublished_seqs(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreFailure>> {
        Box::pin(async move {
            Ok(self.outbox_unpublished(after_seq, limit).await?.iter().map(|row| row.seq).collect())
        })
    }

    /// Marks every outbox row with `seq <= up_to_seq` published.
    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>>;

    /// Number of timers in status `scheduled` (for the pending gauge).
    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>>;

    /// One tenant's timers in status `scheduled` and timers created at or
    /// after `day_start_ms` (for its quotas; see `minoots_core::quota`).
    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a TenantId,
        day_start_ms: WallMs,
    ) -> BoxFuture<'a, Result<TenantUsage, StoreFailure>>;

    /// The state of the store's own protection against a failing or
    /// overloaded database, for metrics. Stores without one report nothing.
    fn guard_stats(&self) -> StoreGuardStats {
        StoreGuardStats::default()
    }
}

/// Counters of a store's circuit breaker and connection-pool watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreGuardStats {
    /// Whether the circuit breaker is open now.
    pub circuit_open: bool,
    /// Times the circuit breaker opened.
    pub circuit_opens: u64,
    /// Warnings that a connection pool was nearly exhausted.
    pub pool_exhaustion_warnings: u64,
}
