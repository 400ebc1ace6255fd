package dataplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// MovedAwayCode is the SQLSTATE that tenancy.enter raises when a tenant's
// transaction reached a database the tenant has left (or was held at a move's
// fence in a transaction whose snapshot predates the switch). The router
// answers it by resolving the tenant again from the catalog and running the
// transaction once more at the new placement.
const MovedAwayCode = "TN001"

// fenceVersion identifies this version of the fence functions, stored as a
// comment so that a database is updated once.
var fenceVersion = func() string {
	sum := sha256.Sum256([]byte(strings.Join(fenceStatements, "\n")))
	return "tenancy fence " + hex.EncodeToString(sum[:8])
}()

// fenceStatements create what a move needs in every data database:
//
//   - tenancy.fence_key(tenant): the advisory lock key of a tenant's fence;
//   - tenancy.enter(tenant, schema): called first in every tenant transaction's
//     prelude. It takes the tenant's fence lock in shared mode, so a mover
//     holding it exclusively makes new transactions wait (and waits for those
//     in flight), then refuses the transaction if the tenant has moved away.
//     Under READ COMMITTED each statement of this VOLATILE function reads a
//     fresh snapshot, so a transaction that waited through a move sees the
//     mark. Under REPEATABLE READ or SERIALIZABLE the transaction's snapshot
//     was taken when the prelude began, before the wait: a transaction that
//     had to wait is refused and retried, with a snapshot taken after the
//     fence;
//   - tenancy.moved: the tenants' schemas in this database that do not serve
//     them (left for another placement, or not yet arrived), and where the
//     tenant went. One database may hold a tenant's old and new placement
//     (its own schema and the shared tables), so the mark names the schema.
var fenceStatements = []string{
	`CREATE TABLE IF NOT EXISTS tenancy.moved (
		tenant    uuid NOT NULL, -- not tenant_id: this is no tenant table
		schema    text NOT NULL,
		placement text NOT NULL,
		move_id   bigint NOT NULL,
		at        timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tenant, schema)
	)`,
	`REVOKE ALL ON tenancy.moved FROM PUBLIC`,
	`CREATE OR REPLACE FUNCTION tenancy.fence_key(t uuid) RETURNS bigint
	LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
		SELECT hashtextextended('tenancy.fence:' || t::text, 0)
	$fn$`,
	`CREATE OR REPLACE FUNCTION tenancy.enter(t uuid, s text) RETURNS void
	LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		k bigint := tenancy.fence_key(t);
	BEGIN
		IF NOT pg_try_advisory_xact_lock_shared(k) THEN
			PERFORM pg_advisory_xact_lock_shared(k); -- a move is fencing the tenant: wait for it
			IF current_setting('transaction_isolation') <> 'read committed' THEN
				RAISE EXCEPTION 'tenancy: tenant % waited for a move; retry the transaction', t
					USING ERRCODE = 'TN001';
			END IF;
		END IF;
		IF EXISTS (SELECT 1 FROM tenancy.moved m WHERE m.tenant = t AND m.schema = s) THEN
			RAISE EXCEPTION 'tenancy: tenant % has moved away from this database', t
				USING ERRCODE = 'TN001';
		END IF;
	END $fn$`,
	`REVOKE ALL ON FUNCTION tenancy.enter(uuid, text) FROM PUBLIC`,
	`GRANT EXECUTE ON FUNCTION tenancy.enter(uuid, text) TO PUBLIC`,
}

// fenceProc carries the fence's version as its comment.
const fenceProc = "tenancy.enter(uuid, text)"

// EnsureFence creates the move fence (see fenceStatements) in the current
// database's tenancy schema, or replaces it when it differs from this
// version's. It is idempotent; concurrent callers in one database take turns.
func EnsureFence(ctx context.Context, q Querier) error {
	return ensureVersioned(ctx, q, "move fence", fenceProc, fenceVersion, fenceStatements)
}
