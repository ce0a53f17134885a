-- Raft mode: the last applied log position (the replication layer's own
-- encoding), written in the same transaction as the entries it covers.
-- Empty in standalone mode.
CREATE TABLE replica_applied (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    mark TEXT NOT NULL
);
