-- Plans: the limits of each tier, and a tenant's own overrides of its plan.
-- A column at 0 means "no limit". Changing either table tells every app node,
-- which drops the limits it cached (see catalog.Cache.Limits).
CREATE TABLE catalog.plans (
    tier                 text PRIMARY KEY CHECK (tier ~ '^[a-z][a-z0-9-]{0,62}$'),
    rps                  double precision NOT NULL CHECK (rps >= 0 AND rps < 'Infinity'),
    burst                integer NOT NULL CHECK (burst >= 0),
    max_concurrent_tx    integer NOT NULL CHECK (max_concurrent_tx >= 0),
    statement_timeout_ms integer NOT NULL CHECK (statement_timeout_ms >= 0 AND statement_timeout_ms < 86400000),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((rps > 0) = (burst > 0))
);

-- NULL keeps the plan's value.
CREATE TABLE catalog.plan_overrides (
    tenant_id            uuid PRIMARY KEY REFERENCES catalog.tenants (id) ON DELETE CASCADE,
    rps                  double precision CHECK (rps >= 0 AND rps < 'Infinity'),
    burst                integer CHECK (burst >= 0),
    max_concurrent_tx    integer CHECK (max_concurrent_tx >= 0),
    statement_timeout_ms integer CHECK (statement_timeout_ms >= 0 AND statement_timeout_ms < 86400000),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO catalog.plans (tier, rps, burst, max_concurrent_tx, statement_timeout_ms) VALUES
    ('free',       10,   20,   4,   5000),
    ('pro',        100,  200,  16,  30000),
    ('enterprise', 1000, 2000, 64,  120000);

CREATE FUNCTION catalog.plans_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One notification per statement: every cached limit is dropped anyway.
    PERFORM pg_notify('tenancy_catalog', json_build_object('plans', true)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER plans_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog.plans
    FOR EACH STATEMENT EXECUTE FUNCTION catalog.plans_notify();

CREATE FUNCTION catalog.plan_overrides_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r catalog.plan_overrides := COALESCE(NEW, OLD);
BEGIN
    PERFORM pg_notify('tenancy_catalog', json_build_object('id', r.tenant_id, 'limits', true)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER plan_overrides_notify AFTER INSERT OR UPDATE OR DELETE ON catalog.plan_overrides
    FOR EACH ROW EXECUTE FUNCTION catalog.plan_overrides_notify();
