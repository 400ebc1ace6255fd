-- Multi-step work on a tenant (provision, suspend, delete, restore, purge,
-- and later move) recorded as a state machine: what ran, which step it is at,
-- which steps are done, and how it ended. A process that dies mid-way leaves
-- its operation open, and whoever continues it (or rolls it back) reads here
-- where to start.
CREATE TABLE catalog.operations (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    -- No foreign key: a provisioning rolled back removes the tenant row, and
    -- its operation stays as the record of what happened.
    tenant_id   uuid NOT NULL,
    tenant_slug text NOT NULL,
    state       text NOT NULL CHECK (state IN ('running', 'done', 'failed', 'rolled_back')),
    -- Steps completed, in order, and the step started last (done or not).
    steps       text[] NOT NULL DEFAULT '{}',
    step        text NOT NULL DEFAULT '',
    -- What the operation needs to be continued by another process.
    params      jsonb NOT NULL DEFAULT '{}',
    error       text NOT NULL DEFAULT '',
    operator    text NOT NULL DEFAULT '',
    client_ip   text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((state IN ('running', 'failed')) = (finished_at IS NULL))
);
CREATE INDEX operations_tenant_idx ON catalog.operations (tenant_id, started_at);
-- One unfinished operation per tenant: a second one is refused until the
-- first is continued or rolled back.
CREATE UNIQUE INDEX operations_open_idx ON catalog.operations (tenant_id) WHERE state IN ('running', 'failed');

-- A purged tenant keeps a tombstone row: its id, slug and placement stay
-- reserved, and the control-plane events that name it still resolve.
ALTER TABLE catalog.tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE catalog.tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'moving', 'deleted', 'purged'));
