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
//! Claims are taken in one `UPDATE … WHERE … RETURNING` whose outer `WHERE`
//! re-checks claimability, so two runners racing on PostgreSQL cannot both
//! take a row (the loser's re-evaluated row no longer matches). A claim may
//! skip tenants (those already holding their share of the runner's slots,
//! see [`crate::fair_slots`]). One SQL text serves both stores; the only
//! per-dialect fragments are the database clock and how a JSON array of
//! tenants is read, spliced in at compile time ([`PG`], [`SQLITE`]).

use sqlx::Row;

use crate::store::{ActionStore, ClaimedDelivery, NewDelivery, Pool, StoreError, failed, on_pool, to_u32};

/// The SQL texts that read the database clock, for one dialect.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// `$6`: a JSON array of tenants whose deliveries this claim skips.
    claim: &'static str,
    beat: &'static str,
    forget_lapsed: &'static str,
}

/// Whether a `deliveries` row may be claimed: pending, due (`$3`: the
/// claimer's wall clock), and unclaimed, or its claim's attempt bound has
/// passed, or its incarnation has not beaten for `$4` ms (database clock).
macro_rules! claimable {
    ($now:expr) => {
        concat!(
            "status = 'pending' AND next_attempt_at_ms <= $3 AND (claimed_by IS NULL OR claimed_until_ms <= $3 \
             OR NOT EXISTS (SELECT 1 FROM action_runners r WHERE r.incarnation = deliveries.claimed_by \
             AND r.heartbeat_at_ms > ",
            $now,
            " - $4))"
        )
    };
}

/// Every clock-reading statement, with `$now` the dialect's database clock in ms.
macro_rules! dialect {
    ($now:expr, $json_texts:expr) => {
        Dialect {
            // $1 incarnation, $2 claimed until, $3 now (wall), $4 heartbeat lapse, $5 limit,
            // $6 tenants to skip (JSON array of strings).
            claim: concat!(
                "UPDATE deliveries SET claimed_by = $1, claimed_until_ms = $2 \
                 WHERE idempotency_key IN (SELECT idempotency_key FROM deliveries WHERE ",
                claimable!($now),
                " AND tenant_id NOT IN (",
                $json_texts,
                ") ORDER BY next_attempt_at_ms LIMIT $5) AND ",
                claimable!($now),
                " RETURNING idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, action, \
                 retry_policy, envelope, attempts, round_attempts"
            ),
            // $1 incarnation, $2 runner id.
            beat: concat!(
                "INSERT INTO action_runners (incarnation, runner_id, started_at_ms, heartbeat_at_ms) \
                 VALUES ($1, $2, ",
                $now,
                ", ",
                $now,
                ") ON CONFLICT (incarnation) DO UPDATE SET heartbeat_at_ms = excluded.heartbeat_at_ms"
            ),
            // $1 how long after its last heartbeat a row is forgotten.
            forget_lapsed: concat!("DELETE FROM action_runners WHERE heartbeat_at_ms < ", $now, " - $1"),
        }
    };
}

/// PostgreSQL: `clock_timestamp()` in whole ms, rounded down (as the timer store).
pub(crate) const PG: Dialect = dialect!(
    "floor(extract(epoch from clock_timestamp()) * 1000)::bigint",
    "SELECT jsonb_array_elements_text($6::jsonb)"
);

/// SQLite: the current time in whole ms (Julian day arithmetic, any SQLite version).
pub(crate) const SQLITE: Dialect =
    dialect!("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)", "SELECT value FROM json_each($6)");

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

const NEXT_DUE: &str = "SELECT MIN(CASE WHEN claimed_by IS NOT NULL AND claimed_until_ms > next_attempt_at_ms \
     THEN claimed_until_ms ELSE next_attempt_at_ms END) FROM deliveries WHERE status = 'pending'";

/// What a claim is made under.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTerms<'a> {
    /// The claiming incarnation.
    pub incarnation: &'a str,
    /// The claimer's wall clock (ms since the epoch).
    pub now_ms: i64,
    /// The claim's attempt bound.
    pub claim_until_ms: i64,
    /// Another incarnation's claim is void once it has not beaten for this long.
    pub heartbeat_lapse_ms: i64,
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

    /// Claims up to `terms.limit` due deliveries for `terms.incarnation`.
    pub async fn claim_due(&self, terms: ClaimTerms<'_>) -> Result<Vec<ClaimedDelivery>, StoreError> {
        on_pool!(&self.pool, p, sql => {
            let rows = sqlx::query(sql.claim)
                .bind(terms.incarnation)
                .bind(terms.claim_until_ms)
                .bind(terms.now_ms)
                .bind(terms.heartbeat_lapse_ms)
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

    /// When the next pending delivery becomes due (or its claim reaches its bound).
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

    #[test]
    fn one_text_per_statement_differs_only_in_the_dialect_fragments() {
        for (pg, sqlite) in
            [(PG.claim, SQLITE.claim), (PG.beat, SQLITE.beat), (PG.forget_lapsed, SQLITE.forget_lapsed)]
        {
            let pg_now = "floor(extract(epoch from clock_timestamp()) * 1000)::bigint";
            let sqlite_now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
            let pg_texts = "SELECT jsonb_array_elements_text($6::jsonb)";
            let sqlite_texts = "SELECT value FROM json_each($6)";
            assert!(pg.contains(pg_now), "{pg}");
            assert_eq!(pg.replace(pg_now, sqlite_now).replace(pg_texts, sqlite_texts), sqlite);
        }
    }
}
