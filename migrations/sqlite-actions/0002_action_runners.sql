-- Action runner incarnations (action store schema version 2): a claim on a delivery
-- belongs to one runner incarnation (a process start), and is void as soon
-- as that incarnation is known dead — when a new incarnation of the same
-- runner id starts (it releases them), or when the incarnation's heartbeat
-- row lapses (its claims become claimable by any runner).

-- The incarnation holding the claim (NULL: unclaimed). `claimed_until_ms`
-- stays as the bound of one attempt: even a live runner's claim ends then.
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
CREATE INDEX deliveries_claimed_by ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;

-- One row per live runner incarnation, renewed about every second with the
-- database clock (ms since the Unix epoch).
CREATE TABLE action_runners (
    incarnation TEXT PRIMARY KEY NOT NULL,
    runner_id TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL
);
CREATE INDEX action_runners_runner ON action_runners (runner_id);
