-- Per-tenant quota limits (NULL: the operator's default; see the core's
-- quota module): timers pending at once, timers created per UTC day, API
-- requests per second.
ALTER TABLE tenants ADD COLUMN quota_pending_timers bigint;
ALTER TABLE tenants ADD COLUMN quota_daily_creates bigint;
ALTER TABLE tenants ADD COLUMN quota_requests_per_second bigint;
