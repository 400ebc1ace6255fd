-- One login for every tenant: users with one account, their memberships (with
-- a role) in tenants, and tenants' API keys for machines. Passwords are stored
-- as argon2id hashes, API keys as SHA-256 hashes of their secret (see the
-- accounts package); neither can be read back.
CREATE TABLE catalog.users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
    name          text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
CREATE UNIQUE INDEX users_email_idx ON catalog.users (email);

CREATE TABLE catalog.memberships (
    tenant_id  uuid NOT NULL REFERENCES catalog.tenants (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES catalog.users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON catalog.memberships (user_id);

CREATE TABLE catalog.api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES catalog.tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'member')),
    -- prefix is the public part of the key, shown in lists and used to find it.
    prefix       text NOT NULL UNIQUE,
    hash         bytea NOT NULL,
    created_by   uuid REFERENCES catalog.users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_idx ON catalog.api_keys (tenant_id);
