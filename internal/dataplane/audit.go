package dataplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// auditVersion identifies this version of the audit functions (a digest of
// their text), stored as a comment so that a database is updated once.
var auditVersion = func() string {
	sum := sha256.Sum256([]byte(strings.Join(auditFunctions, "\n")))
	return "tenancy audit " + hex.EncodeToString(sum[:8])
}()

// The tables every target schema gets beside the tenant tables. They have
// tenant_id, so they are tenant tables too (RLS, the tenant pin), but the
// application may only read the log and cannot touch the chain heads.
const (
	AuditTable     = "tenancy_audit"
	AuditHeadTable = "tenancy_audit_head"
)

// EnsureAuditTables creates, in schema, the audit log and the chain heads if
// they are missing.
func EnsureAuditTables(ctx context.Context, q Querier, schema string) error {
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + Ident(schema, AuditTable) + ` (
			tenant_id  uuid NOT NULL,
			id         bigint GENERATED ALWAYS AS IDENTITY,
			seq        bigint,
			at         timestamptz NOT NULL DEFAULT clock_timestamp(),
			table_name text NOT NULL,
			row_key    jsonb NOT NULL,
			op         text NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'restore', 'purge')),
			changes    jsonb NOT NULL,
			actor      text NOT NULL DEFAULT '',
			client_ip  text NOT NULL DEFAULT '',
			user_agent text NOT NULL DEFAULT '',
			request_id text NOT NULL DEFAULT '',
			prev_hash  bytea,
			hash       bytea,
			PRIMARY KEY (tenant_id, id)
		)`,
		// The seal updates every entry once, at commit: with no index on
		// the columns it sets and room left on each page, that update is a
		// HOT update that writes no index entry.
		`ALTER TABLE ` + Ident(schema, AuditTable) + ` SET (fillfactor = 60)`,
		`DROP INDEX IF EXISTS ` + Ident(schema, AuditTable+"_seq_idx"),
		`DROP INDEX IF EXISTS ` + Ident(schema, AuditTable+"_unsealed_idx"),
		`CREATE TABLE IF NOT EXISTS ` + Ident(schema, AuditHeadTable) + ` (
			tenant_id uuid PRIMARY KEY,
			seq       bigint NOT NULL,
			hash      bytea NOT NULL
		)`,
	}
	stmts = append(stmts, auditSchemaFunctions(schema)...)
	stmts = append(stmts,
		// Seal each transaction's entries into the chain at commit: the
		// tenant's chain head is locked only from then until the commit.
		`DROP TRIGGER IF EXISTS tenancy_audit_seal ON `+Ident(schema, AuditTable),
		`CREATE CONSTRAINT TRIGGER tenancy_audit_seal AFTER INSERT ON `+Ident(schema, AuditTable)+`
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION `+Ident(schema, auditSealFunction)+`()`,
	)
	for _, s := range stmts {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("prepare the audit log in %s: %w", schema, err)
		}
	}
	return nil
}

// auditFunctions are the functions behind soft delete and the audit log, in
// the tenancy schema of each data database. They are SECURITY DEFINER: the
// application role has no right on the audit tables beyond reading its
// tenant's entries, and the soft delete updates a row the DELETE was already
// allowed to reach.
var auditFunctions = []string{
	// tenancy.purging: the purge under way in this transaction ('tenant',
	// 'rows' or ”), honoured only for the table's owner or a superuser: the
	// application role can write the setting but gains nothing by it.
	`CREATE OR REPLACE FUNCTION tenancy.purging(rel oid) RETURNS text
	LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
		SELECT CASE WHEN coalesce(current_setting('tenancy.purge', true), '') <> ''
			AND (SELECT r.rolsuper OR r.oid = c.relowner FROM pg_roles r, pg_class c WHERE r.rolname = session_user AND c.oid = rel)
			THEN current_setting('tenancy.purge', true) ELSE '' END
	$fn$`,
	// tenancy.soft_delete: BEFORE DELETE on every tenant table. A DELETE
	// marks the row deleted instead of removing it (the statement then
	// reports 0 rows). Only the table's owner or a superuser may remove rows,
	// and only inside a purge: tenancy.purge = 'tenant' (the tenant is being
	// purged) or 'rows' (rows deleted before tenancy.purge_before).
	`CREATE OR REPLACE FUNCTION tenancy.soft_delete() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		purge text;
		cond text;
	BEGIN
		IF coalesce(current_setting('tenancy.purge', true), '') <> '' THEN
			purge := tenancy.purging(TG_RELID);
		END IF;
		IF purge <> '' THEN
			IF purge = 'tenant' THEN
				RETURN OLD;
			ELSIF purge = 'rows' THEN
				IF OLD.deleted_at IS NOT NULL AND OLD.deleted_at < current_setting('tenancy.purge_before')::timestamptz THEN
					RETURN OLD;
				END IF;
				RETURN NULL;
			END IF;
		END IF;
		IF OLD.deleted_at IS NOT NULL THEN
			RETURN NULL; -- already deleted
		END IF;
		SELECT string_agg(format('%I = ($1).%I', k, k), ' AND ') INTO cond FROM unnest(TG_ARGV) AS k;
		EXECUTE format('UPDATE %I.%I SET deleted_at = clock_timestamp() WHERE %s', TG_TABLE_SCHEMA, TG_TABLE_NAME, cond) USING OLD;
		RETURN NULL;
	END $fn$`,
	// tenancy.audit_digest: the hash of an entry given the previous one's,
	// for audit.Verify. The seal computes the same expression inline.
	`CREATE OR REPLACE FUNCTION tenancy.audit_digest(prev bytea, tenant uuid, seq bigint, at timestamptz, table_name text,
		row_key jsonb, op text, changes jsonb, actor text, client_ip text, user_agent text, request_id text) RETURNS bytea
	LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
		SELECT ` + digestSQL("$1", func(i int, _ string) string { return fmt.Sprintf("$%d", i+2) }) + `
	$fn$`,
	`REVOKE ALL ON FUNCTION tenancy.soft_delete() FROM PUBLIC`,
}

// digestFields are an entry's hashed fields, in the order of
// tenancy.audit_digest's parameters after prev.
var digestFields = []string{"tenant_id", "seq", "at", "table_name", "row_key", "op", "changes", "actor", "client_ip", "user_agent", "request_id"}

// digestSQL is the SQL expression of an entry's hash: prev is the previous
// entry's hash and field gives the SQL expression of each of digestFields.
// The time is written in UTC so that the session's TimeZone does not change
// it.
func digestSQL(prev string, field func(i int, name string) string) string {
	parts := make([]string, len(digestFields))
	for i, name := range digestFields {
		v := field(i, name)
		switch name {
		case "at":
			v = "to_char(" + v + ` AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')`
		case "tenant_id", "seq", "row_key", "changes":
			v += "::text"
		}
		parts[i] = v
	}
	return "sha256(coalesce(" + prev + ", '') || convert_to(concat_ws(E'\\x1f', " + strings.Join(parts, ", ") + "), 'UTF8'))"
}

// Per-schema trigger functions: the capture and the seal name the schema's
// own log in static SQL, so that PostgreSQL plans their statements once per
// connection instead of once per row (EXECUTE), which makes auditing a
// transaction several times cheaper (docs/AUDIT.md).
const (
	auditRowFunction  = "tenancy_audit_row"
	auditSealFunction = "tenancy_audit_seal"
)

// AuditTrigger returns the EXECUTE FUNCTION clause of a tenant table's audit
// trigger in schema: pk lists the primary key's columns, redacted the columns
// whose values are not copied into the log.
func AuditTrigger(schema string, pk, redacted []string) string {
	return Ident(schema, auditRowFunction) + "(" + QuoteLiteral(strings.Join(pk, ",")) + ", " + QuoteLiteral(strings.Join(redacted, ",")) + ")"
}

// auditSchemaFunctions are schema's capture and seal functions.
func auditSchemaFunctions(schema string) []string {
	log, head := Ident(schema, AuditTable), Ident(schema, AuditHeadTable)
	row, seal := Ident(schema, auditRowFunction), Ident(schema, auditSealFunction)
	return []string{
		// The capture, AFTER INSERT, UPDATE or DELETE on every tenant table.
		// TG_ARGV[0] lists the primary key columns, TG_ARGV[1] the redacted
		// ones (comma-separated). Who and from where come from the settings
		// the router writes for the transaction.
		`CREATE OR REPLACE FUNCTION ` + row + `() RETURNS trigger
		LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
		DECLARE
			o jsonb;
			n jsonb;
			r jsonb;
			op text := lower(TG_OP);
			changes jsonb;
			k text;
		BEGIN
			IF coalesce(current_setting('tenancy.purge', true), '') <> '' AND tenancy.purging(TG_RELID) = 'tenant' THEN
				RETURN NULL; -- the tenant's log goes with it; the catalog records the purge
			END IF;
			IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;
			IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;
			r := coalesce(n, o);
			IF TG_OP = 'DELETE' THEN
				op := 'purge';
			ELSIF TG_OP = 'UPDATE' AND o->'deleted_at' = 'null' AND n->'deleted_at' <> 'null' THEN
				op := 'delete';
			ELSIF TG_OP = 'UPDATE' AND o->'deleted_at' <> 'null' AND n->'deleted_at' = 'null' THEN
				op := 'restore';
			END IF;
			IF TG_OP = 'UPDATE' THEN
				SELECT coalesce(jsonb_object_agg(e.key, jsonb_build_object('old', o->e.key, 'new', e.value)), '{}')
					INTO changes FROM jsonb_each(n) e WHERE o->e.key IS DISTINCT FROM e.value;
				IF changes = '{}' THEN
					RETURN NULL; -- nothing changed
				END IF;
			ELSE
				changes := r;
			END IF;
			IF TG_ARGV[1] <> '' THEN
				FOREACH k IN ARRAY string_to_array(TG_ARGV[1], ',') LOOP
					IF changes ? k THEN
						changes := jsonb_set(changes, ARRAY[k], '"[redacted]"');
					END IF;
				END LOOP;
			END IF;
			INSERT INTO ` + log + ` (tenant_id, table_name, row_key, op, changes, actor, client_ip, user_agent, request_id)
			VALUES ((r->>'tenant_id')::uuid, TG_TABLE_NAME,
				(SELECT jsonb_object_agg(c, r->c) FROM unnest(string_to_array(TG_ARGV[0], ',')) c),
				op, changes,
				coalesce(current_setting('app.actor', true), ''), coalesce(current_setting('app.client_ip', true), ''),
				coalesce(current_setting('app.user_agent', true), ''), coalesce(current_setting('app.request_id', true), ''));
			RETURN NULL;
		END $fn$`,
		// The seal, deferred to commit, per entry. The first call of a
		// transaction locks the tenant's chain head and chains every entry
		// the transaction wrote, in order; later calls find their entry
		// sealed and return at once.
		`CREATE OR REPLACE FUNCTION ` + seal + `() RETURNS trigger
		LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
		DECLARE
			head_seq bigint;
			head_hash bytea;
			e record;
			h bytea;
		BEGIN
			IF EXISTS (SELECT 1 FROM ` + log + ` WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND hash IS NOT NULL) THEN
				RETURN NULL; -- an earlier call of this transaction sealed it
			END IF;
			SELECT seq, hash INTO head_seq, head_hash FROM ` + head + ` WHERE tenant_id = NEW.tenant_id FOR UPDATE;
			IF head_seq IS NULL THEN
				INSERT INTO ` + head + ` (tenant_id, seq, hash) VALUES (NEW.tenant_id, 0, '\x') ON CONFLICT DO NOTHING;
				SELECT seq, hash INTO head_seq, head_hash FROM ` + head + ` WHERE tenant_id = NEW.tenant_id FOR UPDATE;
			END IF;
			-- This transaction's entries: NEW is its first (deferred triggers
			-- fire in the order of the inserts), and other transactions'
			-- entries after it are either invisible or sealed.
			FOR e IN SELECT * FROM ` + log + ` WHERE tenant_id = NEW.tenant_id AND id >= NEW.id AND hash IS NULL ORDER BY id LOOP
				head_seq := head_seq + 1;
				h := ` + digestSQL("head_hash", func(_ int, name string) string {
			if name == "seq" {
				return "head_seq"
			}
			return "e." + name
		}) + `;
				UPDATE ` + log + ` SET seq = head_seq, prev_hash = head_hash, hash = h WHERE tenant_id = e.tenant_id AND id = e.id;
				head_hash := h;
			END LOOP;
			UPDATE ` + head + ` SET seq = head_seq, hash = head_hash WHERE tenant_id = NEW.tenant_id;
			RETURN NULL;
		END $fn$`,
		`REVOKE ALL ON FUNCTION ` + row + `(), ` + seal + `() FROM PUBLIC`,
	}
}

// auditProc carries the audit functions' version as its comment.
const auditProc = "tenancy.soft_delete()"

// EnsureAuditFunctions creates the soft delete and audit functions in the
// current database's tenancy schema, or replaces them when they differ from
// this version's. It is idempotent; concurrent callers in one database take
// turns (CREATE OR REPLACE of one function at once fails).
func EnsureAuditFunctions(ctx context.Context, q Querier) error {
	return ensureVersioned(ctx, q, "audit functions", auditProc, auditVersion, auditFunctions)
}

// FunctionsCurrent reports whether the current database's soft delete, audit
// and fence functions are this version's. Another release's code may have
// replaced them since a schema was prepared (they are shared by every schema
// of the database).
func FunctionsCurrent(ctx context.Context, q Querier) (bool, error) {
	var current bool
	err := q.QueryRow(ctx, `SELECT coalesce(obj_description(to_regprocedure($1), 'pg_proc') = $2, false)
		AND coalesce(obj_description(to_regprocedure($3), 'pg_proc') = $4, false)`,
		auditProc, auditVersion, fenceProc, fenceVersion).Scan(&current)
	if err != nil {
		return false, fmt.Errorf("look up the tenancy functions: %w", err)
	}
	return current, nil
}

// ensureVersioned runs stmts in the current database unless the function
// proc already carries version as its comment, then comments it so. Callers
// in one database take turns on an advisory lock named after what.
func ensureVersioned(ctx context.Context, q Querier, what, proc, version string, stmts []string) error {
	var current bool
	err := q.QueryRow(ctx, `SELECT coalesce(obj_description(to_regprocedure($1), 'pg_proc') = $2, false)`,
		proc, version).Scan(&current)
	if err != nil {
		return fmt.Errorf("look up %s: %w", what, err)
	}
	if current {
		return nil
	}
	if _, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenancy.' || $1))`, what); err != nil {
		return fmt.Errorf("lock %s: %w", what, err)
	}
	for _, s := range append(stmts, `COMMENT ON FUNCTION `+proc+` IS `+QuoteLiteral(version)) {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("create %s: %w", what, err)
		}
	}
	return nil
}

// Version identifies the SQL this package installs beside a data model: the
// soft delete, audit and fence functions of a database and the audit
// functions of each schema. A target records the version it was last
// prepared with, so that code with other SQL prepares it again even when it
// has no migration pending.
var Version = func() string {
	h := sha256.New()
	for _, part := range [][]string{auditFunctions, fenceStatements, auditSchemaFunctions("s")} {
		for _, s := range part {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}()
