package provision_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// testBundle is a platform with one server, and a superuser connection to
// that server's shared database.
type testBundle struct {
	*tenanttest.Bundle
	admin  *pgxpool.Pool // the server's shared database, as the superuser
	server string
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{Bundle: tenanttest.Setup(t, nil)}
	b.server = b.ServerNames[0]
	s, err := b.Platform.Catalog.Server(context.Background(), b.server)
	if err != nil {
		t.Fatal(err)
	}
	b.admin, err = pgxpool.New(context.Background(), s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.admin.Close)
	return b
}

// provisioner returns a provisioner of the bundle's platform with another data model.
func (b *testBundle) provisioner(t *testing.T, files fstest.MapFS) *provision.Provisioner {
	t.Helper()
	return b.newProvisioner(t, files, nil)
}

// create provisions a tenant and drops what it outlives the test with.
func (b *testBundle) create(t *testing.T, p *provision.Provisioner, opts *provision.CreateOpts) (*tenancy.Tenant, error) {
	t.Helper()
	tn, err := p.Create(context.Background(), opts)
	if tn != nil {
		t.Cleanup(func() { b.dropClusterObjects(tn) })
	}
	return tn, err
}

func (b *testBundle) dropClusterObjects(tn *tenancy.Tenant) {
	ctx := context.Background()
	if tn.Model == tenancy.ModelDatabase {
		_ = dataplane.DropDatabase(ctx, b.admin, tn.Placement.Database)
	}
	_ = dataplane.DropRole(ctx, b.admin, tn.Role())
}

// storageName is the schema (schema model) or database (database model) that
// provisioning would create for slug.
func storageName(slug string) string { return "tenant_" + strings.ReplaceAll(slug, "-", "_") }

func (b *testBundle) exists(t *testing.T, query, name string) bool {
	t.Helper()
	var ok bool
	if err := b.admin.QueryRow(context.Background(), query, name).Scan(&ok); err != nil {
		t.Fatalf("%s %q: %v", query, name, err)
	}
	return ok
}

func (b *testBundle) schemaExists(t *testing.T, name string) bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, name)
}

func (b *testBundle) databaseExists(t *testing.T, name string) bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name)
}

func (b *testBundle) roleExists(t *testing.T, name string) bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, name)
}

func (b *testBundle) catalogRows(t *testing.T, slug string) int {
	t.Helper()
	var n int
	if err := b.Platform.Catalog.Pool().QueryRow(context.Background(), `SELECT count(*) FROM catalog.tenants WHERE slug = $1`, slug).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// noTrace fails if anything of a tenant with the slug (and the id, when not
// nil) is left: a catalog row, a schema, a database or a role.
func (b *testBundle) noTrace(t *testing.T, slug string, id uuid.UUID) {
	t.Helper()
	if strings.IndexByte(slug, 0) < 0 {
		if n := b.catalogRows(t, slug); n != 0 {
			t.Errorf("%d catalog rows left for %q", n, slug)
		}
	}
	name := storageName(slug)
	if strings.IndexByte(name, 0) < 0 {
		if b.schemaExists(t, name) {
			t.Errorf("schema %q left behind", name)
		}
		if b.databaseExists(t, name) {
			t.Errorf("database %q left behind", name)
		}
	}
	if id != uuid.Nil && b.roleExists(t, tenancy.RoleName(id)) {
		t.Errorf("role %s left behind", tenancy.RoleName(id))
	}
}

// watchIDs listens on the catalog's channel, and returns a function that
// returns the ids of the tenants the catalog announced with the slug so far:
// how a test learns the id of a tenant whose creation failed.
func (b *testBundle) watchIDs(t *testing.T) func(slug string) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	pc, err := b.Platform.Catalog.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn := pc.Hijack()
	t.Cleanup(func() { conn.Close(ctx) })
	if _, err := conn.Exec(ctx, "LISTEN tenancy_catalog"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[uuid.UUID]bool{}
	return func(slug string) []uuid.UUID {
		for {
			wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			n, err := conn.WaitForNotification(wctx)
			cancel()
			if err != nil {
				break
			}
			var p struct {
				ID   uuid.UUID `json:"id"`
				Slug string    `json:"slug"`
			}
			if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
				t.Fatalf("notification %q: %v", n.Payload, err)
			}
			if seen[p.Slug] == nil {
				seen[p.Slug] = map[uuid.UUID]bool{}
			}
			seen[p.Slug][p.ID] = true
		}
		var ids []uuid.UUID
		for id := range seen[slug] {
			ids = append(ids, id)
		}
		return ids
	}
}

func crmFile(t *testing.T, name string) *fstest.MapFile {
	t.Helper()
	b, err := fs.ReadFile(crm.Migrations(), name)
	if err != nil {
		t.Fatal(err)
	}
	return &fstest.MapFile{Data: b}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	for _, m := range tenancy.Models {
		t.Run(strings.ToUpper(string(m[:1]))+string(m[1:]), func(t *testing.T) {
			t.Parallel()
			slug := pgtest.UniqueName("new-")
			tn, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: slug, Model: m, Server: b.server})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if tn.Slug != slug || tn.Name != slug || tn.Tier != "free" || tn.Model != m || tn.Status != tenancy.StatusActive ||
				tn.Placement.Server != b.server || tn.ID == uuid.Nil || tn.Version != 2 {
				t.Fatalf("created %+v", tn)
			}
			got, err := b.Platform.Catalog.TenantBySlug(ctx, slug)
			if err != nil || got.ID != tn.ID || got.Status != tenancy.StatusActive || got.Placement != tn.Placement {
				t.Fatalf("catalog has %+v, %v; want %+v", got, err, tn)
			}

			// The storage exists, at the data model's latest version.
			var db interface {
				QueryRow(context.Context, string, ...any) pgx.Row
			} = b.admin
			switch m {
			case tenancy.ModelShared:
				if tn.Placement.Schema != provision.SharedSchema || b.roleExists(t, tn.Role()) {
					t.Fatalf("shared tenant: placement %v, own role %v", tn.Placement, b.roleExists(t, tn.Role()))
				}
			case tenancy.ModelSchema:
				if tn.Placement.Schema != storageName(slug) || !b.schemaExists(t, tn.Placement.Schema) || !b.roleExists(t, tn.Role()) {
					t.Fatalf("schema tenant: placement %v, schema %v, role %v", tn.Placement, b.schemaExists(t, tn.Placement.Schema), b.roleExists(t, tn.Role()))
				}
			case tenancy.ModelDatabase:
				if tn.Placement.Database != storageName(slug) || tn.Placement.Schema != provision.DatabaseSchema ||
					!b.databaseExists(t, tn.Placement.Database) || !b.roleExists(t, tn.Role()) {
					t.Fatalf("database tenant: placement %v", tn.Placement)
				}
				db = b.AdminConn(t, tn)
			}
			var version int
			if err := db.QueryRow(ctx, `SELECT max(version) FROM `+dataplane.Ident(tn.Placement.Schema, datamodel.VersionTable)).Scan(&version); err != nil || version != b.Platform.Model.Latest() {
				t.Fatalf("data model version %d, %v; want %d", version, err, b.Platform.Model.Latest())
			}
			var forced int
			if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = $1 AND c.relname IN ('companies', 'contacts', 'deals') AND c.relrowsecurity AND c.relforcerowsecurity`,
				tn.Placement.Schema).Scan(&forced); err != nil || forced != 3 {
				t.Fatalf("%d tenant tables with Row-Level Security forced, %v; want 3", forced, err)
			}

			// And the router serves the tenant.
			var name string
			err = b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'first') RETURNING name`, tn.ID).Scan(&name)
			})
			if err != nil || name != "first" {
				t.Fatalf("insert through the router: %q, %v", name, err)
			}
		})
	}

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		// No server named: placed on the only one; a name and tier given.
		tn, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: pgtest.UniqueName("def-"), Name: "Acme Corp", Tier: "pro", Model: tenancy.ModelShared})
		if err != nil {
			t.Fatal(err)
		}
		if tn.Placement.Server != b.server || tn.Name != "Acme Corp" || tn.Tier != "pro" {
			t.Fatalf("created %+v", tn)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		_, err := b.Platform.Provisioner.Create(ctx, nil)
		tenanttest.WantCode(t, "Create(nil)", err, tenancy.CodeInvalid)
		slug := pgtest.UniqueName("inv-")
		_, err = b.Platform.Provisioner.Create(ctx, &provision.CreateOpts{Slug: slug, Model: "cluster"})
		tenanttest.WantCode(t, "Create in model cluster", err, tenancy.CodeInvalid)
		_, err = b.Platform.Provisioner.Create(ctx, &provision.CreateOpts{Slug: slug})
		tenanttest.WantCode(t, "Create without a model", err, tenancy.CodeInvalid)
		_, err = b.Platform.Provisioner.Create(ctx, &provision.CreateOpts{Slug: slug, Model: tenancy.ModelSchema, Server: "no-such-server"})
		tenanttest.WantCode(t, "Create on an unknown server", err, tenancy.CodeNotFound)
		b.noTrace(t, slug, uuid.Nil)
	})
}

func TestCreateHostileSlug(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, slug := range []string{`a"; DROP TABLE x; --`, `a'; DROP SCHEMA shared CASCADE; --`, "acme\x00", "Acme", "a--b", "acme-", "", "a", "tenant_acme"} {
		for _, m := range tenancy.Models {
			_, err := b.Platform.Provisioner.Create(ctx, &provision.CreateOpts{Slug: slug, Model: m, Server: b.server})
			tenanttest.WantCode(t, "Create "+string(m)+" tenant "+slug, err, tenancy.CodeInvalid)
			b.noTrace(t, slug, uuid.Nil)
		}
	}
	// The shared tables are still there.
	var n int
	if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM shared.companies`).Scan(&n); err != nil {
		t.Fatalf("shared tables after hostile slugs: %v", err)
	}
}

func TestCreateDuplicateSlug(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	first := b.CreateTenant(t, tenancy.ModelSchema, b.server)
	if err := b.Platform.Router.Tx(tenanttest.Ctx(first), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'keep me')`, first.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	watch := b.watchIDs(t)
	for _, m := range tenancy.Models {
		_, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: first.Slug, Model: m, Server: b.server})
		tenanttest.WantCode(t, "Create "+string(m)+" tenant with a used slug", err, tenancy.CodeConflict)
	}
	if ids := watch(first.Slug); len(ids) != 0 {
		t.Fatalf("the catalog announced changes of %v", ids)
	}
	got, err := b.Platform.Catalog.Tenant(ctx, first.ID)
	if err != nil || got.Version != first.Version || got.Status != tenancy.StatusActive || got.Model != tenancy.ModelSchema ||
		got.Placement != first.Placement || !got.UpdatedAt.Equal(first.UpdatedAt) {
		t.Fatalf("the first tenant changed: %+v, %v; was %+v", got, err, first)
	}
	if b.databaseExists(t, storageName(first.Slug)) {
		t.Fatal("a database was created for the duplicate")
	}
	var name string
	if err := b.Platform.Router.Tx(tenanttest.Ctx(first), func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT name FROM companies`).Scan(&name)
	}); err != nil || name != "keep me" {
		t.Fatalf("the first tenant's data: %q, %v", name, err)
	}
}

func TestCreateFailureRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The data model's second migration fails in a tenant's storage, after
	// the schema or database, the role and the first migration are made.
	broken := b.provisioner(t, fstest.MapFS{
		"001_contacts.sql": crmFile(t, "001_contacts.sql"),
		"002_broken.sql":   &fstest.MapFile{Data: []byte(`CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint, PRIMARY KEY (tenant_id, id)); SELECT 1/0;`)},
	})

	for _, m := range []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase} {
		t.Run(strings.ToUpper(string(m[:1]))+string(m[1:]), func(t *testing.T) {
			t.Parallel()
			watch := b.watchIDs(t)
			slug := pgtest.UniqueName("broken-")
			tn, err := b.create(t, broken, &provision.CreateOpts{Slug: slug, Model: m, Server: b.server})
			if err == nil {
				t.Fatalf("Create with a failing migration succeeded: %+v", tn)
			}
			if !strings.Contains(err.Error(), "2_broken") || !strings.Contains(err.Error(), "division by zero") {
				t.Errorf("the error does not say which migration failed and why: %v", err)
			}
			ids := watch(slug)
			if len(ids) != 1 {
				t.Fatalf("catalog notifications for %s: ids %v, want the one tenant created then removed", slug, ids)
			}
			b.noTrace(t, slug, ids[0])
			// The slug is free again.
			if _, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: slug, Model: m, Server: b.server}); err != nil {
				t.Fatalf("Create again with a working data model: %v", err)
			}
		})
	}
}

func TestCreateOverForeignStorage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// Someone else's role owns a schema or database with the name the
	// tenant's would have. Provisioning must neither adopt it nor, when it
	// cleans up, drop it.
	other := pgtest.UniqueName("other")
	if _, err := b.admin.Exec(ctx, `CREATE ROLE `+other+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = b.admin.Exec(context.Background(), `DROP OWNED BY `+other+`; DROP ROLE IF EXISTS `+other)
	})

	t.Run("Schema", func(t *testing.T) {
		t.Parallel()
		slug := pgtest.UniqueName("taken-")
		schema := storageName(slug)
		if _, err := b.admin.Exec(ctx, `CREATE SCHEMA `+schema+` AUTHORIZATION `+other+`;
			CREATE TABLE `+schema+`.keep_me (id int); INSERT INTO `+schema+`.keep_me VALUES (42);
			ALTER TABLE `+schema+`.keep_me OWNER TO `+other); err != nil {
			t.Fatal(err)
		}
		watch := b.watchIDs(t)
		_, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: slug, Model: tenancy.ModelSchema, Server: b.server})
		tenanttest.WantCode(t, "Create over an existing schema", err, tenancy.CodeConflict)
		var id, owner int
		if err := b.admin.QueryRow(ctx, `SELECT id FROM `+schema+`.keep_me`).Scan(&id); err != nil || id != 42 {
			t.Fatalf("the foreign schema's data: %d, %v", id, err)
		}
		if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1 AND nspowner = (SELECT oid FROM pg_roles WHERE rolname = $2)`, schema, other).Scan(&owner); err != nil || owner != 1 {
			t.Fatalf("the foreign schema's owner changed: %v", err)
		}
		if n := b.catalogRows(t, slug); n != 0 {
			t.Fatalf("%d catalog rows left", n)
		}
		for _, id := range watch(slug) {
			if b.roleExists(t, tenancy.RoleName(id)) {
				t.Fatalf("role %s left behind", tenancy.RoleName(id))
			}
		}
	})

	t.Run("Database", func(t *testing.T) {
		t.Parallel()
		slug := pgtest.UniqueName("taken-")
		db := storageName(slug)
		if _, err := b.admin.Exec(ctx, `CREATE DATABASE `+db+` OWNER `+other); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = dataplane.DropDatabase(context.Background(), b.admin, db) })
		watch := b.watchIDs(t)
		_, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: slug, Model: tenancy.ModelDatabase, Server: b.server})
		tenanttest.WantCode(t, "Create over an existing database", err, tenancy.CodeConflict)
		var owner string
		if err := b.admin.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, db).Scan(&owner); err != nil || owner != other {
			t.Fatalf("the foreign database: owner %q, %v; want it kept, owned by %s", owner, err, other)
		}
		var bootstrapped bool
		conn, err := pgx.Connect(ctx, b.Servers[0].URL(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname IN ('tenancy', 'tenant'))`).Scan(&bootstrapped); err != nil || bootstrapped {
			t.Fatalf("provisioning wrote into the foreign database: %v, %v", bootstrapped, err)
		}
		if n := b.catalogRows(t, slug); n != 0 {
			t.Fatalf("%d catalog rows left", n)
		}
		for _, id := range watch(slug) {
			if b.roleExists(t, tenancy.RoleName(id)) {
				t.Fatalf("role %s left behind", tenancy.RoleName(id))
			}
		}
	})
}

func TestUnprotectableDataModel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for _, tc := range []struct {
		name, sql, want string
	}{
		{"PrimaryKeyWithoutTenant", `CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint, body text, PRIMARY KEY (id));`, "primary key must start with tenant_id"},
		{"PrimaryKeyTenantSecond", `CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint, body text, PRIMARY KEY (id, tenant_id));`, "primary key must start with tenant_id"},
		{"NoPrimaryKey", `CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint, body text);`, "primary key must start with tenant_id"},
		{"TenantIDNotUUID", `CREATE TABLE notes (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));`, "tenant_id must be of type uuid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := b.provisioner(t, fstest.MapFS{"001_notes.sql": &fstest.MapFile{Data: []byte(tc.sql)}})
			for _, m := range []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase} {
				watch := b.watchIDs(t)
				slug := pgtest.UniqueName("bad-")
				_, err := b.create(t, p, &provision.CreateOpts{Slug: slug, Model: m, Server: b.server})
				if err == nil || !strings.Contains(err.Error(), "tenant table notes") || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Create %s tenant: %v; want a refusal naming table notes: %s", m, err, tc.want)
				}
				var id uuid.UUID
				if ids := watch(slug); len(ids) == 1 {
					id = ids[0]
				}
				b.noTrace(t, slug, id)
			}
		})
	}

	t.Run("AddServer", func(t *testing.T) {
		t.Parallel()
		// A platform whose data model cannot be protected refuses servers.
		s := b.Servers[0]
		appRole := pgtest.UniqueName("app")
		t.Cleanup(func() { _, _ = b.admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+appRole) })
		p, err := platform.Open(ctx, platform.Config{
			CatalogURL: s.URL(s.NewDatabase(t, "")),
			DataModel:  fstest.MapFS{"001_notes.sql": &fstest.MapFile{Data: []byte(`CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id uuid NOT NULL);`)}},
			AppRole:    appRole,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		shared := s.NewDatabase(t, "")
		err = p.AddServer(ctx, &tenancy.Server{Name: "pg-1", DSN: s.URL(shared)})
		if err == nil || !strings.Contains(err.Error(), "tenant table notes") {
			t.Fatalf("AddServer: %v; want a refusal naming table notes", err)
		}
		if _, err := p.Catalog.Server(ctx, "pg-1"); !errors.Is(err, tenancy.ErrNotFound) {
			t.Fatalf("the refused server is in the catalog: %v", err)
		}
		conn, err := pgx.Connect(ctx, s.URL(shared))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var tables int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'shared'`).Scan(&tables); err != nil || tables != 0 {
			t.Fatalf("%d tables left in the refused server's shared schema, %v", tables, err)
		}
	})
}
