// Package tenanttest sets up a whole platform for tests: a catalog, one or more
// servers of the data plane, and tenants in every isolation model, on real
// PostgreSQL from internal/pgtest.
package tenanttest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// Opts configure Setup. The zero value gives one server and no tenants.
type Opts struct {
	// Servers is how many PostgreSQL servers the data plane has (default 1).
	Servers int
	// PerModel creates this many tenants of each model, spread over the servers.
	PerModel int
	// MaxConnsPerServer is the router's budget (default 50).
	MaxConnsPerServer int
	// PgBouncer puts a private PgBouncer in transaction mode between the
	// router and each server (the server's AppDSN); the administrator still
	// connects directly.
	PgBouncer bool
	// Limits turns on tenants' limits (see platform.LimitsConfig).
	Limits *platform.LimitsConfig
	// On, when set, are the servers to use instead of pgtest.Servers (for
	// instance a pgtest.Restartable one); the catalog is on the first.
	On []*pgtest.Server
}

// Bundle is a platform under test.
type Bundle struct {
	Platform *platform.Platform
	Servers  []*pgtest.Server
	// ServerNames are the catalog names of Servers, in the same order.
	ServerNames []string
	AppRole     string
	// Tenants are the tenants Setup created, PerModel of each model, in model order.
	Tenants []*tenancy.Tenant

	mu      sync.Mutex        // guards created: parallel subtests create tenants
	created []*tenancy.Tenant // every tenant, for cleanup
}

// Setup opens a fresh platform: a new catalog database and a new shared
// database on each server, a unique application role, and the tenants asked
// for. Everything is dropped when the test ends.
func Setup(t testing.TB, opts *Opts) *Bundle {
	t.Helper()
	if opts == nil {
		opts = &Opts{}
	}
	if opts.Servers <= 0 {
		opts.Servers = 1
	}
	ctx := context.Background()
	b := &Bundle{Servers: opts.On, AppRole: pgtest.UniqueName("app")}
	if len(b.Servers) == 0 {
		b.Servers = pgtest.Servers(t, opts.Servers)
	}
	// Registered first so that it runs last, after the databases are dropped.
	t.Cleanup(func() { b.dropClusterObjects(t) })

	catalogDB := b.Servers[0].NewDatabase(t, "")
	p, err := platform.Open(ctx, platform.Config{
		CatalogURL:        b.Servers[0].URL(catalogDB),
		DataModel:         crm.Migrations(),
		AppRole:           b.AppRole,
		MaxConnsPerServer: opts.MaxConnsPerServer,
		Limits:            opts.Limits,
	})
	if err != nil {
		t.Fatalf("open platform: %v", err)
	}
	t.Cleanup(p.Close)
	b.Platform = p
	for i, s := range b.Servers {
		name := fmt.Sprintf("pg%d", i+1)
		db := s.NewDatabase(t, "")
		srv := &tenancy.Server{Name: name, DSN: s.URL(db)}
		if opts.PgBouncer {
			srv.AppDSN = s.PgBouncer(t, b.AppRole, db)
		}
		if err := p.AddServer(ctx, srv); err != nil {
			t.Fatalf("add server %s: %v", name, err)
		}
		b.ServerNames = append(b.ServerNames, name)
	}
	n := 0
	for _, m := range tenancy.Models {
		for i := 0; i < opts.PerModel; i++ {
			b.Tenants = append(b.Tenants, b.CreateTenant(t, m, b.ServerNames[n%len(b.ServerNames)]))
			n++
		}
	}
	return b
}

// CreateTenant creates a tenant with a unique slug in model m on the named server.
func (b *Bundle) CreateTenant(t testing.TB, m tenancy.Model, server string) *tenancy.Tenant {
	t.Helper()
	tn, err := b.Platform.CreateTenant(context.Background(), &provision.CreateOpts{
		Slug: pgtest.UniqueName(string(m)[:2]), Model: m, Server: server,
	})
	if err != nil {
		t.Fatalf("create %s tenant: %v", m, err)
	}
	b.Track(tn)
	return tn
}

// Track has the bundle drop, when the test ends, what a tenant created
// outside CreateTenant (through an API under test) leaves in the cluster.
func (b *Bundle) Track(tn *tenancy.Tenant) {
	b.mu.Lock()
	b.created = append(b.created, tn)
	b.mu.Unlock()
}

// Ctx returns a background context carrying tn.
func Ctx(tn *tenancy.Tenant) context.Context {
	return tenancy.WithTenant(context.Background(), tn)
}

// Server returns the test server that the catalog names name.
func (b *Bundle) Server(name string) *pgtest.Server {
	for i, n := range b.ServerNames {
		if n == name {
			return b.Servers[i]
		}
	}
	panic("unknown server " + name)
}

// AdminConn connects as the superuser to the database holding tn's rows.
func (b *Bundle) AdminConn(t testing.TB, tn *tenancy.Tenant) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), b.Server(tn.Placement.Server).URL(tn.Placement.Database))
	if err != nil {
		t.Fatalf("admin connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// dropClusterObjects drops what outlives the test's databases: tenant
// databases and roles, and the application role.
func (b *Bundle) dropClusterObjects(t testing.TB) {
	ctx := context.Background()
	b.mu.Lock()
	created := slices.Clone(b.created)
	b.mu.Unlock()
	for _, tn := range created {
		conn, err := pgx.Connect(ctx, b.Server(tn.Placement.Server).URL("postgres"))
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		if tn.Model == tenancy.ModelDatabase {
			_ = dataplane.DropDatabase(ctx, conn, tn.Placement.Database)
		}
		_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+dataplane.Ident(tn.Role()))
		conn.Close(ctx)
	}
	for _, s := range b.Servers {
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err != nil {
			continue
		}
		_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+dataplane.Ident(b.AppRole))
		conn.Close(ctx)
	}
}

// WantCode fails the test unless err carries the tenancy error code.
func WantCode(t testing.TB, what string, err error, code tenancy.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want code %s", what, code)
	}
	if got := tenancy.ErrorCode(err); got != code {
		t.Fatalf("%s: got code %s (%v), want %s", what, got, err, code)
	}
}

// NamesMember reports whether field, as a problem names it, is "body", one
// of known, or a member of the JSON object that body starts with: what a
// refusal of a request body may point at.
func NamesMember(field, body string, known []string) bool {
	if field == "body" || slices.Contains(known, field) {
		return true
	}
	var members map[string]json.RawMessage
	_ = json.NewDecoder(strings.NewReader(body)).Decode(&members) // what follows the object does not matter
	_, ok := members[field]
	return ok
}
