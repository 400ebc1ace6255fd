// Package datamodel declares the application's tenant tables as versioned SQL
// migrations and protects them.
//
// The application writes plain CREATE TABLE statements. A table becomes a
// tenant table by having a tenant_id uuid column, and its primary key must start
// with tenant_id. After every migration, in the same transaction, the library
// enables and forces Row-Level Security on each tenant table, writes its
// isolation policy (USING and WITH CHECK on tenant_id), grants the tenant's role
// its rows, and — in a tenant's own schema or database — pins tenant_id to the
// tenant with a CHECK constraint. A migration that would leave a tenant table
// unprotectable (tenant_id not a uuid, a primary key without it) is refused and
// rolled back.
//
// The same migrations run in every isolation model: on the shared tables, in
// each tenant schema and in each tenant database.
package datamodel

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/sqlmigrate"
)

// VersionTable is the table, in each target schema, that records applied migrations.
const VersionTable = "tenancy_migrations"

// protectRevision numbers the protection Protect writes (policies, pins,
// triggers, grants). Raise it when that SQL changes, so that migrate
// protects every target again.
const protectRevision = 1

// platformVersion is what ApplyTx records on a target's version table (as
// its comment) once the target is prepared: the library's SQL beside the
// data model. A target recorded with another version is stale (State.Stale).
var platformVersion = fmt.Sprintf("tenancy platform %s.%d", dataplane.Version, protectRevision)

// PolicyName is the name of the isolation policy on every tenant table.
const PolicyName = "tenancy_isolation"

// PinConstraint is the name of the CHECK constraint that pins tenant_id in a
// tenant's own schema or database.
const PinConstraint = "tenancy_tenant_pin"

// Model is a tenant data model: its migrations, in version order.
type Model struct {
	migrations []sqlmigrate.Migration
}

// Load reads a data model from the *.sql files at the root of fsys, named
// NNN_description.sql (for example 001_create_contacts.sql).
func Load(fsys fs.FS) (*Model, error) {
	ms, err := sqlmigrate.Load(fsys)
	if err != nil {
		return nil, fmt.Errorf("load data model: %w", err)
	}
	return &Model{migrations: ms}, nil
}

// Latest is the version of the newest migration, 0 for an empty model.
func (m *Model) Latest() int {
	if len(m.migrations) == 0 {
		return 0
	}
	return m.migrations[len(m.migrations)-1].Version
}

// Target is where a data model is applied: a schema, the role that may use its
// tenant tables, and, for a tenant's own schema or database, the tenant.
type Target struct {
	// Schema holds the tenant tables.
	Schema string
	// Grantee is the role granted the tenant tables: the application role for
	// the shared tables, the tenant's role otherwise.
	Grantee string
	// Tenant pins tenant_id in a tenant's own schema or database; uuid.Nil for
	// the shared tables.
	Tenant uuid.UUID
}

// ApplyTx brings target to the latest version in tx, an administrative
// transaction on the target's database, then protects every tenant table. It
// returns how many migrations it applied. Concurrent appliers of one target take
// turns on an advisory lock.
func (m *Model) ApplyTx(ctx context.Context, tx pgx.Tx, target Target) (int, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenancy.migrate:' || $1))`, target.Schema); err != nil {
		return 0, fmt.Errorf("lock schema %s for migration: %w", target.Schema, err)
	}
	if err := dataplane.EnsureSchema(ctx, tx, target.Schema, target.Grantee); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true)`, dataplane.Ident(target.Schema)); err != nil {
		return 0, fmt.Errorf("set search_path: %w", err)
	}
	done, err := sqlmigrate.Apply(ctx, tx, dataplane.Ident(target.Schema, VersionTable), m.migrations)
	if err != nil {
		return 0, fmt.Errorf("schema %s: %w", target.Schema, err)
	}
	if err := dataplane.EnsureAuditFunctions(ctx, tx); err != nil {
		return 0, err
	}
	if err := dataplane.EnsureFence(ctx, tx); err != nil {
		return 0, err
	}
	if err := dataplane.EnsureAuditTables(ctx, tx, target.Schema); err != nil {
		return 0, err
	}
	if err := Protect(ctx, tx, target); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, "COMMENT ON TABLE "+dataplane.Ident(target.Schema, VersionTable)+" IS "+dataplane.QuoteLiteral(platformVersion)); err != nil {
		return 0, fmt.Errorf("schema %s: record the platform version: %w", target.Schema, err)
	}
	return len(done), nil
}

// Protect enables and forces Row-Level Security, writes the isolation policy,
// grants and pins every tenant table of target's schema, and gives each the
// soft-delete and audit triggers (see the package documentation). It is
// idempotent; it fails, naming the table, when a tenant table cannot be
// protected.
func Protect(ctx context.Context, tx pgx.Tx, target Target) error {
	rows, err := tx.Query(ctx, `
		SELECT c.relname, a.atttypid = 'uuid'::regtype,
		       COALESCE((SELECT k.conkey[1] = a.attnum FROM pg_constraint k
		                 WHERE k.conrelid = c.oid AND k.contype = 'p'), false),
		       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conname = $2),
		       COALESCE((SELECT array_agg(pa.attname ORDER BY x.n) FROM pg_index i
		                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
		                 JOIN pg_attribute pa ON pa.attrelid = c.oid AND pa.attnum = x.attnum
		                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
		       COALESCE((SELECT array_agg(pa.attname ORDER BY pa.attnum) FROM pg_attribute pa
		                 WHERE pa.attrelid = c.oid AND pa.attnum > 0 AND NOT pa.attisdropped
		                   AND col_description(c.oid, pa.attnum) ILIKE '%tenancy:redact%'), '{}'),
		       COALESCE((SELECT array_agg(k.conname) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'u'), '{}'),
		       COALESCE((SELECT array_agg(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		                 WHERE i.indrelid = c.oid AND i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL
		                   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)), '{}')
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
		ORDER BY c.relname`, target.Schema, PinConstraint)
	if err != nil {
		return fmt.Errorf("find tenant tables in %s: %w", target.Schema, err)
	}
	type table struct {
		name              string
		isUUID, pkLead    bool
		pinned            bool
		pk, redacted      []string
		uniqueConstraints []string
		uniqueIndexes     []string
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		err := r.Scan(&t.name, &t.isUUID, &t.pkLead, &t.pinned, &t.pk, &t.redacted, &t.uniqueConstraints, &t.uniqueIndexes)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("find tenant tables in %s: %w", target.Schema, err)
	}
	grantee := dataplane.Ident(target.Grantee)
	for _, t := range tables {
		if !t.isUUID {
			return fmt.Errorf("tenant table %s: tenant_id must be of type uuid", t.name)
		}
		if !t.pkLead {
			return fmt.Errorf("tenant table %s: the primary key must start with tenant_id, e.g. PRIMARY KEY (tenant_id, id)", t.name)
		}
		rel := dataplane.Ident(target.Schema, t.name)
		tenant := "tenant_id = (SELECT tenancy.current_tenant_id())"
		visible := "(" + tenant + ")"
		var stmts []string
		switch t.name {
		case dataplane.AuditTable:
			// Read only: entries are written by the audit trigger and sealed at
			// commit, both running as the owner.
			stmts = append(stmts, "REVOKE ALL ON "+rel+" FROM "+grantee, "GRANT SELECT ON "+rel+" TO "+grantee)
		case dataplane.AuditHeadTable:
			stmts = append(stmts, "REVOKE ALL ON "+rel+" FROM "+grantee)
		default:
			if len(t.uniqueConstraints) > 0 {
				return fmt.Errorf("tenant table %s: unique constraint %s would keep a deleted row's values taken; use a unique index instead (tenancy makes it ignore deleted rows)", t.name, t.uniqueConstraints[0])
			}
			// Soft delete: deleted rows are hidden unless the transaction asks
			// for them (app.include_deleted, see router.TxOpts).
			visible = "(" + tenant + " AND (deleted_at IS NULL OR current_setting('app.include_deleted', true) = 'on'))"
			stmts = append(stmts,
				"ALTER TABLE "+rel+" ADD COLUMN IF NOT EXISTS deleted_at timestamptz",
				"GRANT SELECT, INSERT, UPDATE, DELETE ON "+rel+" TO "+grantee,
				"DROP TRIGGER IF EXISTS tenancy_soft_delete ON "+rel,
				"CREATE TRIGGER tenancy_soft_delete BEFORE DELETE ON "+rel+" FOR EACH ROW EXECUTE FUNCTION tenancy.soft_delete("+literals(t.pk)+")",
				"DROP TRIGGER IF EXISTS tenancy_audit ON "+rel,
				"CREATE TRIGGER tenancy_audit AFTER INSERT OR UPDATE OR DELETE ON "+rel+" FOR EACH ROW EXECUTE FUNCTION "+dataplane.AuditTrigger(target.Schema, t.pk, t.redacted),
			)
			// A unique index ignores deleted rows, so that a value can be used
			// again once the row holding it is deleted.
			for _, idx := range t.uniqueIndexes {
				var def string
				if err := tx.QueryRow(ctx, `SELECT pg_get_indexdef($1::regclass)`, dataplane.Ident(target.Schema, idx)).Scan(&def); err != nil {
					return fmt.Errorf("tenant table %s: read index %s: %w", t.name, idx, err)
				}
				stmts = append(stmts, "DROP INDEX "+dataplane.Ident(target.Schema, idx), def+" WHERE deleted_at IS NULL")
			}
		}
		stmts = append(stmts,
			"ALTER TABLE "+rel+" ENABLE ROW LEVEL SECURITY",
			"ALTER TABLE "+rel+" FORCE ROW LEVEL SECURITY",
			"DROP POLICY IF EXISTS "+PolicyName+" ON "+rel,
			"CREATE POLICY "+PolicyName+" ON "+rel+" USING "+visible+" WITH CHECK ("+tenant+")",
		)
		if target.Tenant != uuid.Nil && !t.pinned {
			stmts = append(stmts, "ALTER TABLE "+rel+" ADD CONSTRAINT "+PinConstraint+
				" CHECK (tenant_id = '"+target.Tenant.String()+"'::uuid)")
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("protect tenant table %s: %w", t.name, err)
			}
		}
	}
	if _, err := tx.Exec(ctx, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA "+dataplane.Ident(target.Schema)+" TO "+grantee); err != nil {
		return fmt.Errorf("grant sequences in %s: %w", target.Schema, err)
	}
	return nil
}

// literals is a list of SQL string literals.
func literals(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = dataplane.QuoteLiteral(s)
	}
	return strings.Join(q, ", ")
}

// State is what a target has applied, compared with the model.
type State struct {
	// Version is the highest version applied, 0 when none (or no version
	// table).
	Version int `json:"version"`
	// Pending are the model's versions the target has not applied.
	Pending []int `json:"pending,omitempty"`
	// Ahead are versions the target has applied that the model does not
	// know: the target was migrated by newer code.
	Ahead []int `json:"ahead,omitempty"`
	// Drift are versions applied with a checksum other than the file's: the
	// file was changed after it was applied.
	Drift []int `json:"drift,omitempty"`
	// Stale reports that the target was last prepared by a version of this
	// library whose functions, triggers or policies differ from this one's
	// (or by none): migrating it installs this version's, even with no
	// migration pending.
	Stale bool `json:"stale,omitempty"`
}

// Current reports whether the target is at the model's latest version, with
// no drift, and prepared by this version of the library.
func (s State) Current() bool {
	return len(s.Pending) == 0 && len(s.Ahead) == 0 && len(s.Drift) == 0 && !s.Stale
}

// Describe says how a target not Current differs from the model whose newest
// version is latest, for messages ("is at data model version 2, not the latest 3").
func (s State) Describe(latest int) string {
	switch {
	case len(s.Drift) > 0:
		return fmt.Sprintf("has migrations %v changed after they were applied", s.Drift)
	case len(s.Ahead) > 0:
		return fmt.Sprintf("has migrations %v that this code does not know", s.Ahead)
	case len(s.Pending) > 0:
		return fmt.Sprintf("is at data model version %d, not the latest %d", s.Version, latest)
	case s.Stale:
		return "was prepared by another release of tenancy"
	}
	return fmt.Sprintf("is at the latest data model version %d", latest)
}

// StateTx reads the migrations applied in schema, in tx, and compares them
// with the model. A schema without a version table has applied nothing.
func (m *Model) StateTx(ctx context.Context, tx pgx.Tx, schema string) (State, error) {
	table := dataplane.Ident(schema, VersionTable)
	var exists bool
	var recorded *string // the release that prepared the target, as the table's comment
	err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, obj_description(to_regclass($1), 'pg_class')`, table).Scan(&exists, &recorded)
	if err != nil {
		return State{}, fmt.Errorf("schema %s: look up version table: %w", schema, err)
	}
	applied := map[int]string{}
	var s State
	if exists {
		if applied, err = sqlmigrate.Applied(ctx, tx, table); err != nil {
			return State{}, fmt.Errorf("schema %s: %w", schema, err)
		}
		functions, err := dataplane.FunctionsCurrent(ctx, tx)
		if err != nil {
			return State{}, fmt.Errorf("schema %s: %w", schema, err)
		}
		s.Stale = recorded == nil || *recorded != platformVersion || !functions
	}
	known := make(map[int]bool, len(m.migrations))
	for _, mig := range m.migrations {
		known[mig.Version] = true
		sum, ok := applied[mig.Version]
		switch {
		case !ok:
			s.Pending = append(s.Pending, mig.Version)
		case sum != mig.Checksum:
			s.Drift = append(s.Drift, mig.Version)
		}
	}
	for v := range applied {
		s.Version = max(s.Version, v)
		if !known[v] {
			s.Ahead = append(s.Ahead, v)
		}
	}
	slices.Sort(s.Ahead)
	return s, nil
}
