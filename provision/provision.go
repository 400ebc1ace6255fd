package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// SharedSchema holds the shared model's tables in each server's shared database.
const SharedSchema = "shared"

// DatabaseSchema holds the tenant tables in a database-model tenant's database.
const DatabaseSchema = "tenant"

// DefaultRetention is how long a deleted tenant's data is kept, by default,
// before Purge may destroy it.
const DefaultRetention = 30 * 24 * time.Hour

// Config configures a Provisioner.
type Config struct {
	Catalog     *catalog.Catalog // required
	Model       *datamodel.Model // required
	Key         []byte           // the platform key; required
	AppRole     string           // required
	AppPassword string
	// Retention is how long a deleted tenant's data is kept before Purge may
	// destroy it. Default DefaultRetention (30 days); negative is refused.
	Retention time.Duration
	// NoTemplate makes database-model tenants replay the data model's
	// migrations in a new empty database, instead of cloning the server's
	// template database (see the package documentation).
	NoTemplate bool
}

// Provisioner creates tenants, prepares servers, and takes tenants through
// their lifecycle. It is safe for concurrent use, also by several processes:
// the operations of one tenant take turns.
type Provisioner struct {
	cfg Config
	// hook, set by tests only, runs before and after every step; an error
	// fails the step, a panic stands for the process dying there.
	hook func(kind catalog.OpKind, step string, after bool) error
}

// New returns a Provisioner.
func New(cfg Config) (*Provisioner, error) {
	if cfg.Catalog == nil || cfg.Model == nil || len(cfg.Key) == 0 || cfg.AppRole == "" {
		return nil, errors.New("provision: Catalog, Model, Key and AppRole are required")
	}
	if cfg.Retention < 0 {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "provision: retention must not be negative, got %s", cfg.Retention)
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	return &Provisioner{cfg: cfg}, nil
}

// Retention is how long a deleted tenant's data is kept before it may be purged.
func (p *Provisioner) Retention() time.Duration { return p.cfg.Retention }

// BootstrapServer prepares a server for tenants: the application role, and in
// its shared database the tenancy schema and the shared tables at the data
// model's latest version. It is idempotent.
func (p *Provisioner) BootstrapServer(ctx context.Context, s *tenancy.Server) error {
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		return fmt.Errorf("connect to server %q: %w", s.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := dataplane.EnsureAppRole(ctx, conn, p.cfg.AppRole, p.cfg.AppPassword); err != nil {
		return err
	}
	db := conn.Config().Database
	if err := dataplane.RestrictDatabase(ctx, conn, db, p.cfg.AppRole); err != nil {
		return fmt.Errorf("server %q: %w", s.Name, err)
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := dataplane.BootstrapDatabase(ctx, tx, p.cfg.Key); err != nil {
			return err
		}
		_, err := p.cfg.Model.ApplyTx(ctx, tx, datamodel.Target{Schema: SharedSchema, Grantee: p.cfg.AppRole})
		return err
	})
}

// errStorageExists marks the failure of a tenant whose schema or database
// name was already taken on its server: that storage belongs to someone else,
// and cleaning up must not drop it.
var errStorageExists = errors.New("storage exists")

// refuseExisting fails with CodeConflict when exists, a query of name, finds it.
func refuseExisting(ctx context.Context, q dataplane.Querier, s *tenancy.Server, kind, name, exists string) error {
	var found bool
	if err := q.QueryRow(ctx, exists, name).Scan(&found); err != nil {
		return fmt.Errorf("look up %s %s on server %q: %w", kind, name, s.Name, err)
	}
	if found {
		return &tenancy.Error{Code: tenancy.CodeConflict, Err: errStorageExists,
			Message: fmt.Sprintf("%s %q already exists on server %q", kind, name, s.Name)}
	}
	return nil
}
