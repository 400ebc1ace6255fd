// Package provision creates tenants' storage in their isolation model and
// prepares servers of the data plane for them.
//
// Creating a tenant writes its catalog row as "provisioning", creates its
// storage (nothing for the shared model; a schema and role in one transaction
// for the schema model; a database and role for the database model), brings
// the data model to its latest version there, and only then marks the tenant
// active. A failure removes what was created, so a tenant is never active
// without its storage and storage is never left without a catalog row.
package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

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

// Config configures a Provisioner.
type Config struct {
	Catalog     *catalog.Catalog // required
	Model       *datamodel.Model // required
	Key         []byte           // the platform key; required
	AppRole     string           // required
	AppPassword string
}

// Provisioner creates tenants and prepares servers.
type Provisioner struct{ cfg Config }

// New returns a Provisioner.
func New(cfg Config) (*Provisioner, error) {
	if cfg.Catalog == nil || cfg.Model == nil || len(cfg.Key) == 0 || cfg.AppRole == "" {
		return nil, errors.New("provision: Catalog, Model, Key and AppRole are required")
	}
	return &Provisioner{cfg: cfg}, nil
}

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

// CreateOpts describe a new tenant.
type CreateOpts struct {
	Slug  string        // required; see tenancy.ValidateSlug
	Name  string        // display name; default: the slug
	Tier  tenancy.Tier  // default "free"
	Model tenancy.Model // required
	// Server places the tenant; empty: the server with the most free capacity.
	Server string
}

// Create creates a tenant and its storage, and returns it active.
func (p *Provisioner) Create(ctx context.Context, opts *CreateOpts) (*tenancy.Tenant, error) {
	if opts == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "no tenant described")
	}
	if err := tenancy.ValidateSlug(opts.Slug); err != nil {
		return nil, err
	}
	model, err := tenancy.ParseModel(string(opts.Model))
	if err != nil {
		return nil, err
	}
	server, err := p.place(ctx, opts.Server)
	if err != nil {
		return nil, err
	}
	t := &tenancy.Tenant{Slug: opts.Slug, Name: opts.Name, Tier: opts.Tier, Model: model, Status: tenancy.StatusProvisioning}
	if t.Name == "" {
		t.Name = t.Slug
	}
	if t.Tier == "" {
		t.Tier = "free"
	}
	dsn, err := pgx.ParseConfig(server.DSN)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server.Name, err)
	}
	t.Placement = placementFor(server.Name, dsn.Database, t)
	if err := p.cfg.Catalog.CreateTenant(ctx, t); err != nil {
		return nil, err
	}
	if err := p.createStorage(ctx, server, t); err != nil {
		cleanupCtx := context.WithoutCancel(ctx)
		// Storage that was there before is not ours to drop.
		if errors.Is(err, errStorageExists) {
			if dErr := p.cfg.Catalog.DeleteTenantRow(cleanupCtx, t.ID); dErr != nil {
				return nil, fmt.Errorf("provision tenant %q: %w (and removing its catalog row failed: %v)", t.Slug, err, dErr)
			}
			return nil, fmt.Errorf("provision tenant %q: %w", t.Slug, err)
		}
		if dErr := p.dropStorage(cleanupCtx, server, t); dErr != nil {
			return nil, fmt.Errorf("provision tenant %q: %w (and cleaning up failed: %v; the tenant stays provisioning)", t.Slug, err, dErr)
		}
		if dErr := p.cfg.Catalog.DeleteTenantRow(cleanupCtx, t.ID); dErr != nil {
			return nil, fmt.Errorf("provision tenant %q: %w (and removing its catalog row failed: %v)", t.Slug, err, dErr)
		}
		return nil, fmt.Errorf("provision tenant %q: %w", t.Slug, err)
	}
	return p.cfg.Catalog.SetStatus(ctx, t.ID, tenancy.StatusActive, tenancy.StatusProvisioning)
}

func placementFor(server, sharedDB string, t *tenancy.Tenant) tenancy.Placement {
	name := "tenant_" + strings.ReplaceAll(t.Slug, "-", "_")
	switch t.Model {
	case tenancy.ModelSchema:
		return tenancy.Placement{Server: server, Database: sharedDB, Schema: name}
	case tenancy.ModelDatabase:
		return tenancy.Placement{Server: server, Database: name, Schema: DatabaseSchema}
	default:
		return tenancy.Placement{Server: server, Database: sharedDB, Schema: SharedSchema}
	}
}

// place picks the named server, or the one with the most free capacity.
func (p *Provisioner) place(ctx context.Context, name string) (*tenancy.Server, error) {
	if name != "" {
		return p.cfg.Catalog.Server(ctx, name)
	}
	servers, err := p.cfg.Catalog.Servers(ctx)
	if err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		return nil, tenancy.Errorf(tenancy.CodeUnavailable, "no server in the catalog: add one first")
	}
	tenants, err := p.cfg.Catalog.Tenants(ctx, nil)
	if err != nil {
		return nil, err
	}
	load := map[string]int{}
	for _, t := range tenants {
		load[t.Placement.Server]++
	}
	best := servers[0]
	for _, s := range servers[1:] {
		if s.Capacity-load[s.Name] > best.Capacity-load[best.Name] {
			best = s
		}
	}
	return best, nil
}

func (p *Provisioner) createStorage(ctx context.Context, s *tenancy.Server, t *tenancy.Tenant) error {
	switch t.Model {
	case tenancy.ModelShared:
		return nil
	case tenancy.ModelSchema:
		return p.adminTx(ctx, s, "", func(tx pgx.Tx) error {
			if err := refuseExisting(ctx, tx, s, "schema", t.Placement.Schema,
				`SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`); err != nil {
				return err
			}
			if err := dataplane.EnsureTenantRole(ctx, tx, t.Role(), p.cfg.AppRole); err != nil {
				return err
			}
			_, err := p.cfg.Model.ApplyTx(ctx, tx, datamodel.Target{Schema: t.Placement.Schema, Grantee: t.Role(), Tenant: t.ID})
			return err
		})
	case tenancy.ModelDatabase:
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			return fmt.Errorf("connect to server %q: %w", s.Name, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if err := refuseExisting(ctx, conn, s, "database", t.Placement.Database,
			`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`); err != nil {
			return err
		}
		if err := dataplane.EnsureTenantRole(ctx, conn, t.Role(), p.cfg.AppRole); err != nil {
			return err
		}
		if err := dataplane.CreateDatabase(ctx, conn, t.Placement.Database, "", p.cfg.AppRole); err != nil {
			return err
		}
		return p.adminTx(ctx, s, t.Placement.Database, func(tx pgx.Tx) error {
			if err := dataplane.BootstrapDatabase(ctx, tx, p.cfg.Key); err != nil {
				return err
			}
			_, err := p.cfg.Model.ApplyTx(ctx, tx, datamodel.Target{Schema: DatabaseSchema, Grantee: t.Role(), Tenant: t.ID})
			return err
		})
	}
	return fmt.Errorf("unknown model %q", t.Model)
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

func (p *Provisioner) dropStorage(ctx context.Context, s *tenancy.Server, t *tenancy.Tenant) error {
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		return fmt.Errorf("connect to server %q: %w", s.Name, err)
	}
	defer conn.Close(ctx)
	switch t.Model {
	case tenancy.ModelSchema:
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+dataplane.Ident(t.Placement.Schema)+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", t.Placement.Schema, err)
		}
	case tenancy.ModelDatabase:
		if err := dataplane.DropDatabase(ctx, conn, t.Placement.Database); err != nil {
			return err
		}
	default:
		return nil
	}
	return dataplane.DropRole(ctx, conn, t.Role())
}

// adminTx runs fn in a transaction on database db of server s (its shared
// database when db is empty), as the server's administrator.
func (p *Provisioner) adminTx(ctx context.Context, s *tenancy.Server, db string, fn func(pgx.Tx) error) error {
	cfg, err := pgx.ParseConfig(s.DSN)
	if err != nil {
		return fmt.Errorf("server %q: %w", s.Name, err)
	}
	if db != "" {
		cfg.Database = db
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s/%s: %w", s.Name, cfg.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, fn)
}
