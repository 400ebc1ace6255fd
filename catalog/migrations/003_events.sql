-- The control plane's audit log: who (operator, client IP) did what to which
-- tenant, when. Append-only, and hash-chained like the tenants' own logs: each
-- event's hash covers the previous event's hash and its own fields, so an
-- altered, removed or reordered event breaks the chain (see
-- catalog.Catalog.VerifyEvents).
CREATE TABLE catalog.events (
    seq         bigint PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    tenant_id   uuid,
    tenant_slug text NOT NULL DEFAULT '',
    operator    text NOT NULL DEFAULT '',
    client_ip   text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}',
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX events_tenant_idx ON catalog.events (tenant_id, seq);
CREATE INDEX events_at_idx ON catalog.events (at);

-- The chain's head: one row, locked by each inserting transaction until it
-- commits. Control-plane changes are rare, so taking turns costs nothing.
CREATE TABLE catalog.events_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO catalog.events_head VALUES (1, 0, '\x');

CREATE FUNCTION catalog.event_digest(prev bytea, seq bigint, at timestamptz, kind text, tenant_id uuid,
    tenant_slug text, operator text, client_ip text, details jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(prev || convert_to(concat_ws(E'\x1f', seq::text,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), kind, coalesce(tenant_id::text, ''),
        tenant_slug, operator, client_ip, details::text), 'UTF8'))
$$;

CREATE FUNCTION catalog.events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    h catalog.events_head;
BEGIN
    SELECT * INTO h FROM catalog.events_head WHERE id = 1 FOR UPDATE;
    NEW.seq := h.seq + 1;
    NEW.at := clock_timestamp();
    NEW.prev_hash := h.hash;
    NEW.hash := catalog.event_digest(h.hash, NEW.seq, NEW.at, NEW.kind, NEW.tenant_id, NEW.tenant_slug,
        NEW.operator, NEW.client_ip, NEW.details);
    UPDATE catalog.events_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
    RETURN NEW;
END $$;
CREATE TRIGGER events_chain BEFORE INSERT ON catalog.events
    FOR EACH ROW EXECUTE FUNCTION catalog.events_chain();

CREATE FUNCTION catalog.events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'catalog.events is append-only' USING ERRCODE = '42501';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON catalog.events
    FOR EACH ROW EXECUTE FUNCTION catalog.events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON catalog.events
    FOR EACH STATEMENT EXECUTE FUNCTION catalog.events_append_only();
