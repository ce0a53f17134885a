//! The action store's SQL that differs per database, spliced into one text
//! at compile time: the database clock, how a JSON array of tenants is read,
//! the row locking of a claim ([`PG`], [`SQLITE`]), and how multi-row
//! statements write their parameters. The claims ([`crate::claims`]) and
//! the queue ([`crate::store`]) take their dialect from here.

/// The SQL texts with a per-dialect fragment, for one dialect.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// `$5`: a JSON array of tenants whose deliveries this claim skips.
    pub(crate) claim: &'static str,
    pub(crate) release_void: &'static str,
    pub(crate) beat: &'static str,
    pub(crate) forget_lapsed: &'static str,
    /// How multi-row statements write their parameters.
    pub(crate) placeholders: Placeholders,
}

/// How a multi-row statement ([`crate::store`]) writes its parameters; it
/// binds them in the order they appear either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholders {
    /// `$1, $2, …`: PostgreSQL's only form.
    Numbered,
    /// `?` each: sqlx finds a numbered SQLite parameter by looking up its
    /// name, a scan of the statement's names, so binding n numbered
    /// parameters costs n² (5 % of the server under delivery load);
    /// anonymous ones are taken in order.
    Anonymous,
}

/// An unclaimed pending delivery: the predicate of the `deliveries_unclaimed`
/// index (migrations), which the claim and the next-due query must repeat
/// word for word to be answered from it.
macro_rules! unclaimed {
    () => {
        "status = 'pending' AND claimed_by IS NULL"
    };
}
pub(crate) use unclaimed;

/// Every statement with a dialect fragment: `$now` the database clock in ms,
/// `$json_texts` the rows of the JSON array of strings `$5`, `$lock_picked`
/// how a claim locks the rows it picks.
macro_rules! dialect {
    ($now:expr, $json_texts:expr, $lock_picked:expr, $placeholders:expr) => {
        Dialect {
            // $1 incarnation, $2 claimed until, $3 now (wall), $4 limit,
            // $5 tenants to skip (JSON array of strings). Claimable: pending,
            // unclaimed (the `deliveries_unclaimed` index holds those) and due.
            claim: concat!(
                "UPDATE deliveries SET claimed_by = $1, claimed_until_ms = $2 \
                 WHERE idempotency_key IN (SELECT idempotency_key FROM deliveries WHERE ",
                unclaimed!(),
                " AND next_attempt_at_ms <= $3 AND tenant_id NOT IN (",
                $json_texts,
                ") ORDER BY next_attempt_at_ms LIMIT $4",
                $lock_picked,
                ") RETURNING idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, action, \
                 retry_policy, envelope, attempts, round_attempts"
            ),
            // $1 now (wall), $2 heartbeat lapse: a claim past its attempt bound,
            // or whose incarnation has not beaten for $2 ms (database clock) or
            // is gone, is void.
            release_void: concat!(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until_ms = 0 \
                 WHERE claimed_by IS NOT NULL AND (claimed_until_ms <= $1 \
                 OR NOT EXISTS (SELECT 1 FROM action_runners r WHERE r.incarnation = deliveries.claimed_by \
                 AND r.heartbeat_at_ms > ",
                $now,
                " - $2)) AND status = 'pending'"
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
            placeholders: $placeholders,
        }
    };
}

/// PostgreSQL: `clock_timestamp()` in whole ms, rounded down (as the timer store).
pub(crate) const PG: Dialect = dialect!(
    "floor(extract(epoch from clock_timestamp()) * 1000)::bigint",
    "SELECT jsonb_array_elements_text($5::jsonb)",
    " FOR UPDATE SKIP LOCKED",
    Placeholders::Numbered
);

/// SQLite: the current time in whole ms (Julian day arithmetic, any SQLite version).
pub(crate) const SQLITE: Dialect = dialect!(
    "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    "SELECT value FROM json_each($5)",
    "",
    Placeholders::Anonymous
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_text_per_statement_differs_only_in_the_dialect_fragments() {
        for (pg, sqlite) in [
            (PG.claim, SQLITE.claim),
            (PG.release_void, SQLITE.release_void),
            (PG.beat, SQLITE.beat),
            (PG.forget_lapsed, SQLITE.forget_lapsed),
        ] {
            let pg_now = "floor(extract(epoch from clock_timestamp()) * 1000)::bigint";
            let sqlite_now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
            let pg_texts = "SELECT jsonb_array_elements_text($5::jsonb)";
            let sqlite_texts = "SELECT value FROM json_each($5)";
            let pg_lock = " FOR UPDATE SKIP LOCKED";
            assert!(pg.contains(pg_now) || pg.contains(pg_texts), "{pg}");
            assert_eq!(
                pg.replace(pg_now, sqlite_now).replace(pg_texts, sqlite_texts).replace(pg_lock, ""),
                sqlite
            );
        }
    }
}
