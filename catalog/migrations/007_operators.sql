-- Named operators of the control API, each with a token of its own, so that
-- the control-plane log says which operator did what (the shared operator
-- token of `tenancy serve` stays, as the way in when the catalog is down).
-- A token is opk_<prefix>_<secret>: the prefix finds the row, the secret is
-- stored as its SHA-256 hash and cannot be read back. A revoked operator keeps
-- its row, so its name in the log stays unambiguous.
CREATE TABLE catalog.operators (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{1,62}$'),
    prefix       text NOT NULL UNIQUE,
    hash         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
