-- Webhook signing keys per tenant (schema version 5): generated on a
-- tenant's first webhook or first look at its keys, kept in the cluster
-- database so every node signs a tenant's requests with the same key.
-- `next_key` is set while a rotation is under way (requests carry both
-- signatures) until it is promoted to `current_key`. Times: ms since the
-- Unix epoch.
CREATE TABLE tenant_signing_keys (
    tenant_id TEXT PRIMARY KEY NOT NULL,
    current_key TEXT NOT NULL,
    next_key TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
