//! The reads both stores make, each written once ([`shared_reads!`]) over
//! the texts of [`crate::sql`] and the decoders of [`crate::rows`], and
//! instantiated per store: one timer, a timer's fires, the due scan, the
//! outbox backlog, the counters. A store provides where each read runs —
//! `reader(doing)`, a read connection (SQLite's query-only pool,
//! PostgreSQL's read pool through its pool watch), and `due_reader(doing)`,
//! the connection of the due scan (the writer's, so that it sees the last
//! commit) — and its own outbox backlog texts (where the watermark lives).

/// `impl $store` with the shared reads; database errors become failures
/// with `$failure`; `$unpublished` and `$unpublished_seqs` are the store's
/// outbox backlog texts.
macro_rules! shared_reads {
    ($store:ty, $failure:path, $unpublished:expr, $unpublished_seqs:expr) => {
        impl $store {
            /// `LoadDue`: pending timers due by `until_ms` after `after`, a page of `limit`.
            async fn load_due(
                &self,
                after: Option<minoots_core::store::DueKey>,
                until_ms: minoots_core::WallMs,
                limit: u32,
            ) -> Result<minoots_core::store::StoreReply, minoots_core::StoreFailure> {
                let (after_due, after_id) = match after {
                    Some((due, id)) => (due, id.0),
                    None => (minoots_core::WallMs::MIN, uuid::Uuid::nil()),
                };
                let mut conn = self.due_reader("acquiring a connection to load due timers").await?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(crate::sql::LOAD_DUE.as_str()))
                    .bind(until_ms)
                    .bind(after_due)
                    .bind(after_id)
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| $failure("loading due timers", e))?;
                let more = rows.len() > limit as usize;
                let timers = rows
                    .iter()
                    .take(limit as usize)
                    .map(crate::rows::due_from_row)
                    .collect::<Result<_, _>>()?;
                Ok(minoots_core::store::StoreReply::Loaded { timers, more })
            }

            /// `Get`: one timer of a tenant.
            async fn get(
                &self,
                tenant_id: &minoots_core::TenantId,
                timer_id: &minoots_core::TimerId,
            ) -> Result<minoots_core::store::StoreReply, minoots_core::StoreFailure> {
                let mut conn = self.reader("acquiring a reader").await?;
                let row = sqlx::query(sqlx::AssertSqlSafe(crate::sql::GET_TIMER.as_str()))
                    .bind(timer_id.0)
                    .bind(tenant_id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| $failure("reading a timer", e))?;
                Ok(minoots_core::store::StoreReply::Timer(
                    row.as_ref().map(crate::rows::timer_from_row).transpose()?,
                ))
            }

            /// `ListFires`: `None` when the tenant has no such timer.
            async fn list_fires(
                &self,
                tenant_id: &minoots_core::TenantId,
                timer_id: &minoots_core::TimerId,
                after_occurrence: u32,
                limit: u32,
            ) -> Result<minoots_core::store::StoreReply, minoots_core::StoreFailure> {
                let mut conn = self.reader("acquiring a reader").await?;
                let exists = sqlx::query(crate::sql::TIMER_EXISTS)
                    .bind(timer_id.0)
                    .bind(tenant_id.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| $failure("reading a timer", e))?;
                if exists.is_none() {
                    return Ok(minoots_core::store::StoreReply::Fires(None));
                }
                let rows = sqlx::query(sqlx::AssertSqlSafe(crate::sql::LIST_FIRES.as_str()))
                    .bind(timer_id.0)
                    .bind(i64::from(after_occurrence))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| $failure("listing fires", e))?;
                let fires = rows.iter().map(crate::rows::fire_from_row).collect::<Result<_, _>>()?;
                Ok(minoots_core::store::StoreReply::Fires(Some(fires)))
            }

            /// Unpublished outbox events after `after_seq`, at most `limit`.
            async fn unpublished(
                &self,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<minoots_core::event::OutboxEvent>, minoots_core::StoreFailure> {
                let mut conn = self.reader("acquiring a reader").await?;
                let texts: Vec<String> = sqlx::query_scalar($unpublished)
                    .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| $failure("reading the outbox", e))?;
                texts.iter().map(|text| crate::rows::event_from_text(text)).collect()
            }

            /// The sequence numbers of [`Self::unpublished`]'s rows only.
            async fn unpublished_seqs(
                &self,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<u64>, minoots_core::StoreFailure> {
                let mut conn = self.reader("acquiring a reader").await?;
                let seqs: Vec<i64> = sqlx::query_scalar($unpublished_seqs)
                    .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| $failure("reading the outbox", e))?;
                seqs.into_iter().map(crate::rows::seq_from_sql).collect()
            }

            /// Timers in status `scheduled` (the counter every commit maintains).
            async fn pending(&self) -> Result<u64, minoots_core::StoreFailure> {
                let mut conn = self.reader("acquiring a reader").await?;
                let count: i64 = sqlx::query_scalar(crate::sql::COUNT_PENDING)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| $failure("counting pending timers", e))?;
                crate::rows::seq_from_sql(count)
            }

            /// One tenant's quota usage: pending timers, timers created since `day_start_ms`.
            async fn usage(
                &self,
                tenant: &minoots_core::TenantId,
                day_start_ms: minoots_core::WallMs,
            ) -> Result<minoots_core::quota::TenantUsage, minoots_core::StoreFailure> {
                let mut conn = self.reader("acquiring a reader").await?;
                let (pending, today): (i64, i64) = sqlx::query_as(crate::sql::TENANT_USAGE)
                    .bind(tenant.as_str())
                    .bind(day_start_ms)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| $failure("counting a tenant's timers", e))?;
                Ok(minoots_core::quota::TenantUsage {
                    pending_timers: crate::rows::seq_from_sql(pending)?,
                    created_today: crate::rows::seq_from_sql(today)?,
                })
            }
        }
    };
}
pub(crate) use shared_reads;
