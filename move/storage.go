package move

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// connect opens an administrative connection to database db of the named
// server (its shared database when db is empty).
func (m *Mover) connect(ctx context.Context, server, db string) (*pgx.Conn, error) {
	s, err := m.cfg.Catalog.Server(ctx, server)
	if err != nil {
		return nil, err
	}
	cfg, err := dataplane.AdminConfig(s, db)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s/%s: %w", s.Name, cfg.Database, err)
	}
	return conn, nil
}

// adminTx runs fn in a transaction on the database of placement p, as the
// server's administrator.
func (m *Mover) adminTx(ctx context.Context, p tenancy.Placement, fn func(pgx.Tx) error) error {
	conn, err := m.connect(ctx, p.Server, p.Database)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, fn)
}

// mark records in tx's database that the tenant is not served there: it is
// arriving (the destination, until the switch) or has left for placement.
func mark(ctx context.Context, tx pgx.Tx, tenant uuid.UUID, schema, placement string, move int64) error {
	if err := dataplane.EnsureFence(ctx, tx); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO tenancy.moved (tenant, schema, placement, move_id) VALUES ($1, $2, $3, $4)
		ON CONFLICT (tenant, schema) DO UPDATE SET placement = EXCLUDED.placement, move_id = EXCLUDED.move_id, at = now()`,
		tenant, schema, placement, move)
	if err != nil {
		return fmt.Errorf("mark the tenant moved: %w", err)
	}
	return nil
}

// unmark removes the move's mark of the tenant's schema from tx's database.
func unmark(ctx context.Context, tx pgx.Tx, tenant uuid.UUID, schema string, move int64) error {
	_, err := tx.Exec(ctx, `DELETE FROM tenancy.moved WHERE tenant = $1 AND schema = $2 AND move_id = $3`, tenant, schema, move)
	if err != nil && !isUndefined(err) {
		return fmt.Errorf("unmark the tenant: %w", err)
	}
	return nil
}

// deleteRows removes every row the tenant has in schema's tenant tables,
// the audit log's included, without a trigger firing: the leftovers of a
// move in shared tables, or the tenant's old copy there.
func deleteRows(ctx context.Context, tx pgx.Tx, schema string, tenant uuid.UUID) error {
	tables, err := tenantTables(ctx, tx, schema)
	if err != nil {
		return err
	}
	if err := replica(ctx, tx); err != nil {
		return err
	}
	for i := len(tables) - 1; i >= 0; i-- {
		if _, err := tx.Exec(ctx, `DELETE FROM `+dataplane.Ident(schema, tables[i].name)+` WHERE tenant_id = $1`, tenant); err != nil {
			return fmt.Errorf("delete the tenant's rows of %s: %w", tables[i].name, err)
		}
	}
	return nil
}

// prepare creates the destination's storage as provisioning does, marked as
// not serving the tenant yet. For the shared model it removes whatever rows
// of the tenant the shared tables hold (a copy left by an earlier move).
func (m *Mover) prepare(ctx context.Context, r *record, t *tenancy.Tenant) error {
	dst := *t
	dst.Model, dst.Placement = r.ToModel, r.To
	s, err := m.cfg.Catalog.Server(ctx, r.To.Server)
	if err != nil {
		return err
	}
	within := func(tx pgx.Tx) error {
		if r.ToModel == tenancy.ModelShared {
			if err := deleteRows(ctx, tx, r.To.Schema, t.ID); err != nil {
				return err
			}
		}
		return mark(ctx, tx, t.ID, r.To.Schema, "arriving", r.ID)
	}
	if r.ToModel != tenancy.ModelShared {
		// Claimed before it is created: a roll back drops the destination
		// only if this move created it, and a crash right after the
		// creation must not leave it orphaned.
		if err := m.refuseExisting(ctx, r); err != nil {
			return err
		}
		if _, err := m.pool().Exec(ctx, `UPDATE catalog.moves SET dst_created = true WHERE id = $1`, r.ID); err != nil {
			return fmt.Errorf("record the destination: %w", err)
		}
		r.DstCreated = true
	}
	if err := m.cfg.Provisioner.CreateStorage(ctx, s, &dst, within); err != nil {
		return err
	}
	return nil
}

// refuseExisting fails with CodeConflict when the destination schema or
// database exists already.
func (m *Mover) refuseExisting(ctx context.Context, r *record) error {
	conn, err := m.connect(ctx, r.To.Server, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	what, name, sql := "schema", r.To.Schema, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`
	if r.ToModel == tenancy.ModelDatabase {
		what, name, sql = "database", r.To.Database, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`
	}
	if err := conn.QueryRow(ctx, sql, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up %s %s: %w", what, name, err)
	}
	if exists {
		return tenancy.Errorf(tenancy.CodeConflict, "%s %q already exists on server %q (a copy kept by an earlier move?): drop it first", what, name, r.To.Server)
	}
	return nil
}

// dropStorage removes the tenant's storage at placement p of model: its
// schema or database, and its role when no other placement of the tenant on
// that server needs it (keep names that placement); for the shared model its
// rows. The server's shared database keeps the tenant's mark, if any.
func (m *Mover) dropStorage(ctx context.Context, tenant uuid.UUID, model tenancy.Model, p tenancy.Placement, keep *tenancy.Placement, keepModel tenancy.Model) error {
	if model == tenancy.ModelShared {
		return m.adminTx(ctx, p, func(tx pgx.Tx) error { return deleteRows(ctx, tx, p.Schema, tenant) })
	}
	conn, err := m.connect(ctx, p.Server, "")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	switch model {
	case tenancy.ModelSchema:
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+dataplane.Ident(p.Schema)+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", p.Schema, err)
		}
	case tenancy.ModelDatabase:
		if err := dataplane.DropDatabase(ctx, conn, p.Database); err != nil {
			return err
		}
	}
	if keep != nil && keep.Server == p.Server && keepModel != tenancy.ModelShared {
		return nil // the tenant's role serves its other placement on this server
	}
	err = dataplane.DropRole(ctx, conn, tenancy.RoleName(tenant))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "2BP01" {
		// Roles belong to the cluster: another server name of the catalog
		// on the same cluster still grants it something. It stays.
		return nil
	}
	return err
}

// isUndefined reports a missing table or schema (a database the fence was
// never installed in).
func isUndefined(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}
