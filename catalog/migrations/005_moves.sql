-- Moves of tenants between isolation models and servers (package move), one
-- row per move, recorded as a state machine so that a move interrupted at any
-- step is rolled back, or finished, when it is run again:
--   started → prepared → copied → switched → done, or rolled_back before switched.
-- The placement in catalog.tenants changes in the same transaction as the
-- state becomes 'switched'.
CREATE TABLE catalog.moves (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES catalog.tenants (id) ON DELETE CASCADE,
    state        text NOT NULL CHECK (state IN ('started', 'prepared', 'copied', 'switched', 'done', 'rolled_back')),
    src_model    text NOT NULL,
    src_server   text NOT NULL,
    src_database text NOT NULL,
    src_schema   text NOT NULL,
    dst_model    text NOT NULL,
    dst_server   text NOT NULL REFERENCES catalog.servers (name),
    dst_database text NOT NULL,
    dst_schema   text NOT NULL,
    -- The destination's schema or database was created by this move (so a
    -- roll back may drop it).
    dst_created  boolean NOT NULL DEFAULT false,
    keep_source  boolean NOT NULL DEFAULT false,
    -- The last audit entry (seq) of the tenant that the bulk copy saw: later
    -- entries name the rows the fence copies again.
    copied_seq   bigint,
    rows_copied  bigint NOT NULL DEFAULT 0,
    bytes_copied bigint NOT NULL DEFAULT 0,
    pause_ms     double precision,
    error        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- One unfinished move per tenant.
CREATE UNIQUE INDEX moves_open_idx ON catalog.moves (tenant_id) WHERE state NOT IN ('done', 'rolled_back');
