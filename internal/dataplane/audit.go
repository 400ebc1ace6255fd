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
	for _, s := range []string{
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
		`CREATE INDEX IF NOT EXISTS ` + Ident(AuditTable+"_seq_idx") + ` ON ` + Ident(schema, AuditTable) + ` (tenant_id, seq)`,
		`CREATE INDEX IF NOT EXISTS ` + Ident(AuditTable+"_unsealed_idx") + ` ON ` + Ident(schema, AuditTable) + ` (tenant_id, id) WHERE hash IS NULL`,
		`CREATE TABLE IF NOT EXISTS ` + Ident(schema, AuditHeadTable) + ` (
			tenant_id uuid PRIMARY KEY,
			seq       bigint NOT NULL,
			hash      bytea NOT NULL
		)`,
		// Seal each transaction's entries into the chain at commit: the
		// tenant's chain head is locked only from then until the commit.
		`DROP TRIGGER IF EXISTS tenancy_audit_seal ON ` + Ident(schema, AuditTable),
		`CREATE CONSTRAINT TRIGGER tenancy_audit_seal AFTER INSERT ON ` + Ident(schema, AuditTable) + `
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tenancy.audit_seal()`,
	} {
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
		purge text := tenancy.purging(TG_RELID);
		cond text;
	BEGIN
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
	// tenancy.audit: AFTER INSERT, UPDATE or DELETE on every tenant table.
	// TG_ARGV[0] lists the primary key columns, TG_ARGV[1] the redacted
	// ones (comma-separated). Who and from where come from the settings the
	// router writes for the transaction.
	`CREATE OR REPLACE FUNCTION tenancy.audit() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		o jsonb;
		n jsonb;
		r jsonb;
		op text := lower(TG_OP);
		changes jsonb;
		redacted text[] := string_to_array(nullif(TG_ARGV[1], ''), ',');
		k text;
	BEGIN
		IF tenancy.purging(TG_RELID) = 'tenant' THEN
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
			changes := coalesce(n, o);
		END IF;
		FOREACH k IN ARRAY coalesce(redacted, '{}') LOOP
			IF changes ? k THEN
				changes := jsonb_set(changes, ARRAY[k], '"[redacted]"');
			END IF;
		END LOOP;
		EXECUTE format('INSERT INTO %I.tenancy_audit (tenant_id, table_name, row_key, op, changes, actor, client_ip, user_agent, request_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)', TG_TABLE_SCHEMA)
		USING (r->>'tenant_id')::uuid, TG_TABLE_NAME,
			(SELECT jsonb_object_agg(c, r->c) FROM unnest(string_to_array(TG_ARGV[0], ',')) c),
			op, changes,
			coalesce(current_setting('app.actor', true), ''), coalesce(current_setting('app.client_ip', true), ''),
			coalesce(current_setting('app.user_agent', true), ''), coalesce(current_setting('app.request_id', true), '');
		RETURN NULL;
	END $fn$`,
	// tenancy.audit_digest: the hash of an entry given the previous one's.
	// The time is written in UTC so that the session's TimeZone does not
	// change it.
	`CREATE OR REPLACE FUNCTION tenancy.audit_digest(prev bytea, tenant uuid, seq bigint, at timestamptz, table_name text,
		row_key jsonb, op text, changes jsonb, actor text, client_ip text, user_agent text, request_id text) RETURNS bytea
	LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
		SELECT sha256(coalesce(prev, '') || convert_to(concat_ws(E'\x1f', tenant::text, seq::text,
			to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), table_name, row_key::text, op, changes::text,
			actor, client_ip, user_agent, request_id), 'UTF8'))
	$fn$`,
	// tenancy.audit_seal: deferred to commit, per entry. The first call of a
	// transaction locks the tenant's chain head and chains every entry the
	// transaction wrote, in order; later calls find nothing left to seal.
	`CREATE OR REPLACE FUNCTION tenancy.audit_seal() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		head_seq bigint;
		head_hash bytea;
		e record;
		h bytea;
		sealed int;
	BEGIN
		EXECUTE format('SELECT seq, hash FROM %I.tenancy_audit_head WHERE tenant_id = $1 FOR UPDATE', TG_TABLE_SCHEMA)
			INTO head_seq, head_hash USING NEW.tenant_id;
		IF head_seq IS NULL THEN
			EXECUTE format('INSERT INTO %I.tenancy_audit_head (tenant_id, seq, hash) VALUES ($1, 0, ''\x'') ON CONFLICT DO NOTHING', TG_TABLE_SCHEMA)
				USING NEW.tenant_id;
			EXECUTE format('SELECT seq, hash FROM %I.tenancy_audit_head WHERE tenant_id = $1 FOR UPDATE', TG_TABLE_SCHEMA)
				INTO head_seq, head_hash USING NEW.tenant_id;
		END IF;
		sealed := 0;
		FOR e IN EXECUTE format('SELECT * FROM %I.tenancy_audit WHERE tenant_id = $1 AND hash IS NULL ORDER BY id', TG_TABLE_SCHEMA)
			USING NEW.tenant_id LOOP
			sealed := sealed + 1;
			head_seq := head_seq + 1;
			h := tenancy.audit_digest(head_hash, e.tenant_id, head_seq, e.at, e.table_name, e.row_key, e.op, e.changes,
				e.actor, e.client_ip, e.user_agent, e.request_id);
			EXECUTE format('UPDATE %I.tenancy_audit SET seq = $1, prev_hash = $2, hash = $3 WHERE tenant_id = $4 AND id = $5', TG_TABLE_SCHEMA)
				USING head_seq, head_hash, h, e.tenant_id, e.id;
			head_hash := h;
		END LOOP;
		IF sealed = 0 THEN
			RETURN NULL; -- an earlier call of this transaction sealed everything
		END IF;
		EXECUTE format('UPDATE %I.tenancy_audit_head SET seq = $1, hash = $2 WHERE tenant_id = $3', TG_TABLE_SCHEMA)
			USING head_seq, head_hash, NEW.tenant_id;
		RETURN NULL;
	END $fn$`,
	`REVOKE ALL ON FUNCTION tenancy.soft_delete(), tenancy.audit(), tenancy.audit_seal() FROM PUBLIC`,
}

// EnsureAuditFunctions creates the soft delete and audit functions in the
// current database's tenancy schema, or replaces them when they differ from
// this version's. It is idempotent; concurrent callers in one database take
// turns (CREATE OR REPLACE of one function at once fails).
func EnsureAuditFunctions(ctx context.Context, q Querier) error {
	var current bool
	err := q.QueryRow(ctx, `SELECT coalesce(obj_description(to_regprocedure('tenancy.audit_seal()'), 'pg_proc') = $1, false)`,
		auditVersion).Scan(&current)
	if err != nil {
		return fmt.Errorf("look up audit functions: %w", err)
	}
	if current {
		return nil
	}
	if _, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenancy.audit_functions'))`); err != nil {
		return fmt.Errorf("lock audit functions: %w", err)
	}
	for _, s := range append(auditFunctions, `COMMENT ON FUNCTION tenancy.audit_seal() IS `+QuoteLiteral(auditVersion)) {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("create audit functions: %w", err)
		}
	}
	return nil
}
