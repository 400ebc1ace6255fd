-- The control plane: servers of the data plane and the tenants placed on them.
CREATE TABLE catalog.settings (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE catalog.servers (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    dsn        text NOT NULL CHECK (dsn <> ''),
    app_dsn    text NOT NULL DEFAULT '',
    region     text NOT NULL DEFAULT '',
    capacity   integer NOT NULL DEFAULT 1000 CHECK (capacity > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE catalog.tenants (
    id         uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{1,62}$'),
    name       text NOT NULL,
    tier       text NOT NULL DEFAULT 'free',
    model      text NOT NULL CHECK (model IN ('shared', 'schema', 'database')),
    server     text NOT NULL REFERENCES catalog.servers (name),
    database   text NOT NULL,
    schema     text NOT NULL,
    status     text NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'moving', 'deleted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    version    bigint NOT NULL DEFAULT 1
);
CREATE INDEX tenants_server_idx ON catalog.tenants (server);
-- A placement holds one tenant, except the shared tables that hold many.
CREATE UNIQUE INDEX tenants_placement_idx ON catalog.tenants (server, database, schema) WHERE model <> 'shared';

-- Every change bumps the version and tells every app node, which drops the
-- tenant from its cache (see catalog.Cache).
CREATE FUNCTION catalog.tenants_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER tenants_touch BEFORE UPDATE ON catalog.tenants
    FOR EACH ROW EXECUTE FUNCTION catalog.tenants_touch();

CREATE FUNCTION catalog.tenants_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r catalog.tenants := COALESCE(NEW, OLD);
BEGIN
    PERFORM pg_notify('tenancy_catalog', json_build_object('id', r.id, 'slug', r.slug, 'version', r.version)::text);
    IF TG_OP = 'UPDATE' AND OLD.slug <> NEW.slug THEN
        PERFORM pg_notify('tenancy_catalog', json_build_object('id', OLD.id, 'slug', OLD.slug, 'version', NEW.version)::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_notify AFTER INSERT OR UPDATE OR DELETE ON catalog.tenants
    FOR EACH ROW EXECUTE FUNCTION catalog.tenants_notify();
