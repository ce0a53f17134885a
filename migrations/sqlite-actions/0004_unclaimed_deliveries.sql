-- Claims read only unclaimed deliveries (schema version 4 of the action store).
--
-- A claim used to scan every pending delivery in due order, claimed ones
-- included, and look each row up to judge its claim: with a backlog that
-- made every claim as slow as the backlog was long. Now a claim reads the
-- unclaimed deliveries only, from an index that also holds their tenant
-- (so skipping a tenant never reads its rows), and void claims — past their
-- bound, or held by an incarnation whose heartbeat lapsed or that is gone —
-- are released by a separate sweep that reads the claimed rows only.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_unclaimed ON deliveries (next_attempt_at_ms, tenant_id)
    WHERE status = 'pending' AND claimed_by IS NULL;
DROP INDEX deliveries_claimed_by;
CREATE INDEX deliveries_claimed_by ON deliveries (claimed_by, claimed_until_ms)
    WHERE claimed_by IS NOT NULL;
