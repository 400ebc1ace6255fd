package provision

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// Placement returns where the tenant t lives in model m on server s: the
// placement Create gives a new tenant, and a move its destination.
func Placement(s *tenancy.Server, t *tenancy.Tenant, m tenancy.Model) (tenancy.Placement, error) {
	dsn, err := pgx.ParseConfig(s.DSN)
	if err != nil {
		return tenancy.Placement{}, fmt.Errorf("server %q: %w", s.Name, err)
	}
	in := *t
	in.Model = m
	return placementFor(s.Name, dsn.Database, &in), nil
}

// ErrStorageExists is wrapped by the error (of code CodeConflict) of
// CreateStorage when the tenant's schema or database exists already; it was
// left alone.
var ErrStorageExists = errStorageExists

// CreateStorage creates the storage of t in its model and placement on s, as
// provisioning does, for a tenant that already exists (a move's
// destination): the tenant's role, its schema or database, the data model at
// its latest version with every protection. within, if not nil, runs at the
// end of the last transaction that creates it (on the shared database for the
// shared model, where nothing else is created), so that what it writes is
// committed with the storage or not at all. It fails with CodeConflict when
// the schema or database already exists, and leaves it alone.
func (p *Provisioner) CreateStorage(ctx context.Context, s *tenancy.Server, t *tenancy.Tenant, within func(pgx.Tx) error) error {
	sess := p.session(s, t)
	defer sess.close(context.WithoutCancel(ctx))
	run := func(tx pgx.Tx) error {
		if within == nil {
			return nil
		}
		return within(tx)
	}
	if t.Model == tenancy.ModelShared {
		return sess.tx(ctx, "", run)
	}
	conn, err := sess.conn(ctx, "")
	if err != nil {
		return err
	}
	if t.Model == tenancy.ModelSchema {
		err = refuseExisting(ctx, conn, s, "schema", t.Placement.Schema, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`)
	} else {
		err = refuseExisting(ctx, conn, s, "database", t.Placement.Database, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`)
	}
	if err != nil {
		return err
	}
	if err := dataplane.EnsureTenantRole(ctx, conn, t.Role(), p.cfg.AppRole); err != nil {
		return err
	}
	target := datamodel.Target{Schema: t.Placement.Schema, Grantee: t.Role(), Tenant: t.ID}
	db := ""
	if t.Model == tenancy.ModelDatabase {
		if err := p.createDatabase(ctx, sess); err != nil {
			return err
		}
		db = t.Placement.Database
	}
	return sess.tx(ctx, db, func(tx pgx.Tx) error {
		if db != "" {
			if err := dataplane.BootstrapDatabase(ctx, tx, p.cfg.Key); err != nil {
				return err
			}
		}
		if _, err := p.cfg.Model.ApplyTx(ctx, tx, target); err != nil {
			return err
		}
		return run(tx)
	})
}
