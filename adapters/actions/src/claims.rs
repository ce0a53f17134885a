//! Who may run a delivery: runner incarnations, their heartbeats, and the
//! claims they hold on deliveries (part of [`ActionStore`]).
//!
//! A runner process draws a fresh **incarnation** id at every start and
//! records it with each claim it takes (`deliveries.claimed_by`). A claim
//! lasts while its incarnation is alive, and at most until
//! `claimed_until_ms` (the bound of one attempt). An incarnation is known
//! dead, and its claims are void, as soon as
//!
//! - a new incarnation of the same runner id starts: registering releases
//!   the predecessors' claims and forgets them (both stores), or
//! - its heartbeat row (`action_runners`, renewed about every second) has
//!   not been renewed for `heartbeat_lapse_ms` by the database clock, or is
//!   gone: any runner may claim its deliveries (what a second node does when
//!   a node dies for good).
//!
//! Claims are taken in one `UPDATE … WHERE key IN (SELECT … LIMIT n)
//! RETURNING`. On PostgreSQL the inner select locks the rows it picks and
//! skips rows another claim has locked (`FOR UPDATE SKIP LOCKED`), so two
//! runners racing never take the same row and never wait for each other;
//! SQLite has one writer, so the statement runs alone. The outer `WHERE`
//! names the picked keys only: re-checking claimability there let
//! PostgreSQL's planner answer the outer `WHERE` from the unclaimed index —
//! a scan of the whole backlog per claim (seconds under overload). A claim
//! reads only unclaimed deliveries, from an index that holds their due time
//! and tenant, so its cost follows what it claims, not the backlog; it may
//! skip tenants (those already stocked with work, see [`crate::fair_slots`])
//! without reading their rows. Void claims — past their attempt bound, or
//! held by an incarnation known dead — are released by a separate sweep
//! ([`ActionStore::release_void_claims`], which each runner makes every
//! heartbeat) that reads the claimed rows only; released deliveries are then
//! claimed like new ones.
//!
//! One SQL text serves both stores; the only per-dialect fragments (the
//! database clock, how a JSON array of tenants is read, the row locking of
//! a claim) are spliced in at compile time by [`crate::dialect`].

use sqlx::Row;

use crate::dialect::unclaimed;
use crate::store::{ActionStore, ClaimedDelivery, NewDelivery, Pool, StoreError, failed, on_pool, to_u32};

const RELEASE_PREDECESSORS: &str = "UPDATE deliveries SET claimed_by = NULL, claimed_until_ms = 0 \
     WHERE status = 'pending' AND claimed_by IN \
     (SELECT incarnation FROM action_runners WHERE runner_id = $1 AND incarnation <> $2)";

const FORGET_PREDECESSORS: &str = "DELETE FROM action_runners WHERE runner_id = $1 AND incarnation <> $2";

const RELEASE_OWN: &str = "UPDATE deliveries SET claimed_by = NULL, claimed_until_ms = 0 \
     WHERE status = 'pending' AND claimed_by = $1";

const FORGET_OWN: &str = "DELETE FROM action_runners WHERE incarnation = $1";

const DEFER: &str = "UPDATE deliveries SET next_attempt_at_ms = $3, claimed_by = NULL, claimed_until_ms = 0, \
     updated_at_ms = $4, last_error = $5 WHERE idempotency_key = $1 AND status = 'pending' AND claimed_by = $2";

const EXTEND_CLAIM: &str = "UPDATE deliveries SET claimed_until_ms = $3 \
     WHERE idempotency_key = $1 AND status = 'pending' AND claimed_by = $2";

const NEXT_DUE: &str = concat!("SELECT MIN(next_attempt_at_ms) FROM deliveries WHERE ", unclaimed!());

/// What a claim is made under.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTerms<'a> {
    /// The claiming incarnation.
    pub incarnation: &'a str,
    /// The claimer's wall clock (ms since the epoch).
    pub now_ms: i64,
    /// The claim's attempt bound.
    pub claim_until_ms: i64,
    /// Most deliveries to claim.
    pub limit: u32,
    /// Tenants whose deliveries are left for later.
    pub skip_tenants: &'a [String],
}

impl ActionStore {
    /// Registers a new incarnation of `runner_id`: the claims of its earlier
    /// incarnations are released (they run again at once) and those
    /// incarnations forgotten, in one transaction with the first heartbeat.
    /// Returns how many claims were released.
    pub async fn register_incarnation(&self, runner_id: &str, incarnation: &str) -> Result<u64, StoreError> {
        on_pool!(&self.pool, p, sql => {
            let mut tx = p.begin().await.map_err(failed("starting a runner registration"))?;
            let released = sqlx::query(RELEASE_PREDECESSORS)
                .bind(runner_id)
                .bind(incarnation)
                .execute(&mut *tx)
                .await
                .map_err(failed("releasing an earlier incarnation's claims"))?
                .rows_affected();
            sqlx::query(FORGET_PREDECESSORS)
                .bind(runner_id)
                .bind(incarnation)
                .execute(&mut *tx)
                .await
                .map_err(failed("forgetting earlier incarnations"))?;
            sqlx::query(sql.beat)
                .bind(incarnation)
                .bind(runner_id)
                .execute(&mut *tx)
                .await
                .map_err(failed("recording a runner incarnation"))?;
            tx.commit().await.map_err(failed("committing a runner registration"))?;
            Ok(released)
        })
    }

    /// Renews an incarnation's heartbeat (recreating its row if it was forgotten meanwhile).
    pub async fn heartbeat(&self, runner_id: &str, incarnation: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p, sql => {
            sqlx::query(sql.beat)
                .bind(incarnation)
                .bind(runner_id)
                .execute(p)
                .await
                .map_err(failed("renewing a runner heartbeat"))?;
            Ok(())
        })
    }

    /// Forgets incarnations whose last heartbeat is older than `after_ms`
    /// (their claims were already claimable). Returns how many.
    pub async fn forget_lapsed_incarnations(&self, after_ms: i64) -> Result<u64, StoreError> {
        on_pool!(&self.pool, p, sql => {
            Ok(sqlx::query(sql.forget_lapsed)
                .bind(after_ms)
                .execute(p)
                .await
                .map_err(failed("forgetting lapsed runners"))?
                .rows_affected())
        })
    }

    /// A clean shutdown: releases the incarnation's claims (another runner
    /// may take them at once) and forgets it. Returns how many claims were released.
    pub async fn retire_incarnation(&self, incarnation: &str) -> Result<u64, StoreError> {
        on_pool!(&self.pool, p, _sql => {
            let mut tx = p.begin().await.map_err(failed("starting a runner retirement"))?;
            let released = sqlx::query(RELEASE_OWN)
                .bind(incarnation)
                .execute(&mut *tx)
                .await
                .map_err(failed("releasing claims"))?
                .rows_affected();
            sqlx::query(FORGET_OWN)
                .bind(incarnation)
                .execute(&mut *tx)
                .await
                .map_err(failed("forgetting a runner incarnation"))?;
            tx.commit().await.map_err(failed("committing a runner retirement"))?;
            Ok(released)
        })
    }

    /// Extends `incarnation`'s claim on a delivery to `until_ms` (before a
    /// delivery that waited for a slot starts); false when the claim is no
    /// longer its own (or the delivery is done).
    pub async fn extend_claim(
        &self,
        key: &str,
        incarnation: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        on_pool!(&self.pool, p, _sql => {
            Ok(sqlx::query(EXTEND_CLAIM)
                .bind(key)
                .bind(incarnation)
                .bind(until_ms)
                .execute(p)
                .await
                .map_err(failed("extending a claim"))?
                .rows_affected()
                == 1)
        })
    }

    /// Claims up to `terms.limit` due unclaimed deliveries for
    /// `terms.incarnation`, earliest due first. Deliveries under a void
    /// claim are claimable once [`ActionStore::release_void_claims`] has
    /// released them.
    pub async fn claim_due(&self, terms: ClaimTerms<'_>) -> Result<Vec<ClaimedDelivery>, StoreError> {
        on_pool!(&self.pool, p, sql => {
            let rows = sqlx::query(sql.claim)
                .bind(terms.incarnation)
                .bind(terms.claim_until_ms)
                .bind(terms.now_ms)
                .bind(i64::from(terms.limit))
                .bind(serde_json::to_string(terms.skip_tenants).unwrap_or_else(|_| "[]".into()))
                .fetch_all(p)
                .await
                .map_err(failed("claiming deliveries"))?;
            rows.iter()
                .map(|r| -> Result<ClaimedDelivery, sqlx::Error> {
                    Ok(ClaimedDelivery {
                        delivery: NewDelivery {
                            idempotency_key: r.try_get("idempotency_key")?,
                            tenant_id: r.try_get("tenant_id")?,
                            timer_id: r.try_get("timer_id")?,
                            occurrence: to_u32(r.try_get("occurrence")?),
                            action_id: r.try_get("action_id")?,
                            kind: r.try_get("kind")?,
                            action: r.try_get("action")?,
                            retry_policy: r.try_get("retry_policy")?,
                            envelope: r.try_get("envelope")?,
                        },
                        attempts: to_u32(r.try_get("attempts")?),
                        round_attempts: to_u32(r.try_get("round_attempts")?),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed("reading claimed deliveries"))
        })
    }

    /// Puts a claimed delivery back, to run at `until_ms`, without counting an
    /// attempt (its destination's circuit breaker refused it). `reason` becomes
    /// its last error. Returns `false` when `incarnation` no longer held it.
    pub async fn defer(
        &self,
        delivery: &NewDelivery,
        incarnation: &str,
        until_ms: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        on_pool!(&self.pool, p, _sql => {
            let done = sqlx::query(DEFER)
                .bind(&delivery.idempotency_key)
                .bind(incarnation)
                .bind(until_ms)
                .bind(now_ms)
                .bind(reason)
                .execute(p)
                .await
                .map_err(failed("deferring a delivery"))?
                .rows_affected();
            Ok(done > 0)
        })
    }

    /// Releases every void claim: past its attempt bound at `now_ms` (the
    /// caller's wall clock), or held by an incarnation whose heartbeat is
    /// older than `heartbeat_lapse_ms` (database clock) or that is not
    /// registered. Returns how many deliveries were released (claimable again).
    pub async fn release_void_claims(&self, now_ms: i64, heartbeat_lapse_ms: i64) -> Result<u64, StoreError> {
        on_pool!(&self.pool, p, sql => {
            Ok(sqlx::query(sql.release_void)
                .bind(now_ms)
                .bind(heartbeat_lapse_ms)
                .execute(p)
                .await
                .map_err(failed("releasing void claims"))?
                .rows_affected())
        })
    }

    /// When the next unclaimed pending delivery becomes due (claims are
    /// released by [`ActionStore::release_void_claims`]).
    pub async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        on_pool!(&self.pool, p, _sql => {
            sqlx::query_scalar::<_, Option<i64>>(NEXT_DUE)
                .fetch_one(p)
                .await
                .map_err(failed("reading the next due delivery"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::SQLITE;
    use crate::store::Pool;

    /// SQLite's plan for `sql`, one line per step.
    async fn plan(pool: &sqlx::SqlitePool, sql: &str) -> String {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(pool)
            .await
            .expect("plan");
        rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn claims_read_the_unclaimed_index_and_the_sweep_reads_the_claimed_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ActionStore::open_sqlite(&dir.path().join("actions.db")).await.expect("open");
        let Pool::Sqlite(pool) = &store.pool else { unreachable!("a SQLite store") };
        let claim = plan(pool, SQLITE.claim).await;
        assert!(claim.contains("USING INDEX deliveries_unclaimed"), "{claim}");
        assert!(!claim.contains("SCAN deliveries\n") && !claim.ends_with("SCAN deliveries"), "{claim}");
        let next = plan(pool, NEXT_DUE).await;
        assert!(next.contains("deliveries_unclaimed"), "{next}");
        let sweep = plan(pool, SQLITE.release_void).await;
        assert!(sweep.contains("USING INDEX deliveries_claimed_by"), "{sweep}");
    }
}
