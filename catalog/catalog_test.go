package catalog_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// testBundle is a migrated catalog of its own with one server row.
type testBundle struct {
	cat    *catalog.Catalog
	url    string // superuser URL of the catalog database
	server string // the catalog name of the server row
}

// setup returns a fresh, migrated catalog (a copy of a template migrated once
// per test binary) with one server.
func setup(t *testing.T) *testBundle {
	t.Helper()
	s := pgtest.DefaultServer(t)
	tpl := s.Template(t, "catalog", func(ctx context.Context, url string) error {
		cat, err := catalog.Open(ctx, url)
		if err != nil {
			return err
		}
		defer cat.Close()
		return cat.Migrate(ctx)
	})
	b := &testBundle{url: s.URL(s.NewDatabase(t, tpl)), server: "pg-1"}
	b.cat = open(t, b.url)
	if err := b.cat.AddServer(context.Background(), &tenancy.Server{Name: b.server, DSN: "postgres://admin@db.invalid:5432/shared"}); err != nil {
		t.Fatalf("add server: %v", err)
	}
	return b
}

// open opens another handle on a catalog, as another process would.
func open(t *testing.T, url string) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("open catalog: %v", err)
	}
	t.Cleanup(cat.Close)
	return cat
}

// newTenant describes an active tenant with a unique slug on the bundle's
// server; it is not created.
func (b *testBundle) newTenant(model tenancy.Model) *tenancy.Tenant {
	slug := pgtest.UniqueName("t")
	p := tenancy.Placement{Server: b.server, Database: "shared", Schema: "shared"}
	switch model {
	case tenancy.ModelSchema:
		p.Schema = "tenant_" + slug
	case tenancy.ModelDatabase:
		p.Database, p.Schema = "tenant_"+slug, "tenant"
	}
	return &tenancy.Tenant{Slug: slug, Name: slug + " inc", Tier: "free", Model: model, Placement: p, Status: tenancy.StatusActive}
}

// createTenant creates an active tenant with a unique slug.
func (b *testBundle) createTenant(t *testing.T, model tenancy.Model) *tenancy.Tenant {
	t.Helper()
	tn := b.newTenant(model)
	if err := b.cat.CreateTenant(context.Background(), tn); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	return tn
}

// countTenants counts the catalog rows with the slug.
func (b *testBundle) countTenants(t *testing.T, slug string) int {
	t.Helper()
	var n int
	if err := b.cat.Pool().QueryRow(context.Background(), `SELECT count(*) FROM catalog.tenants WHERE slug = $1`, slug).Scan(&n); err != nil {
		t.Fatalf("count tenants: %v", err)
	}
	return n
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.DefaultServer(t)

	versions := func(t *testing.T, cat *catalog.Catalog) []int {
		t.Helper()
		var vs []int
		if err := cat.Pool().QueryRow(ctx, `SELECT array_agg(version ORDER BY version) FROM catalog.schema_migrations`).Scan(&vs); err != nil {
			t.Fatalf("read catalog versions: %v", err)
		}
		return vs
	}
	// checkUsable fails unless the migrated catalog works.
	checkUsable := func(t *testing.T, cat *catalog.Catalog) {
		t.Helper()
		if err := cat.AddServer(ctx, &tenancy.Server{Name: "pg-1", DSN: "postgres://a@h/db"}); err != nil {
			t.Fatalf("add server after migrating: %v", err)
		}
	}

	t.Run("Idempotent", func(t *testing.T) {
		t.Parallel()
		cat := open(t, s.URL(s.NewDatabase(t, "")))
		if err := cat.Migrate(ctx); err != nil {
			t.Fatalf("first Migrate: %v", err)
		}
		first := versions(t, cat)
		if len(first) == 0 {
			t.Fatal("Migrate recorded no version")
		}
		checkUsable(t, cat)
		for i := range 2 {
			if err := cat.Migrate(ctx); err != nil {
				t.Fatalf("Migrate again (%d): %v", i+2, err)
			}
		}
		if again := versions(t, cat); !equalInts(again, first) {
			t.Fatalf("versions after migrating again: %v, want %v", again, first)
		}
		if servers, err := cat.Servers(ctx); err != nil || len(servers) != 1 {
			t.Fatalf("servers after migrating again: %v, %v; want the one added", servers, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		url := s.URL(s.NewDatabase(t, ""))
		// Two processes (two handles) migrate an empty catalog at once.
		cats := []*catalog.Catalog{open(t, url), open(t, url)}
		errs := make([]error, len(cats))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, cat := range cats {
			wg.Go(func() {
				<-start
				errs[i] = cat.Migrate(ctx)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Migrate in goroutine %d: %v", i, err)
			}
		}
		if a, b := versions(t, cats[0]), versions(t, cats[1]); len(a) == 0 || !equalInts(a, b) || hasDuplicates(a) {
			t.Fatalf("versions after concurrent migrations: %v and %v", a, b)
		}
		checkUsable(t, cats[1])
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func hasDuplicates(a []int) bool {
	seen := map[int]bool{}
	for _, v := range a {
		if seen[v] {
			return true
		}
		seen[v] = true
	}
	return false
}

func TestAddServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		in := &tenancy.Server{Name: "pg-eu-1", DSN: "postgres://admin:pw@db.invalid:5432/shared", Region: "eu-west"}
		if err := b.cat.AddServer(ctx, in); err != nil {
			t.Fatalf("AddServer: %v", err)
		}
		if in.Capacity != 1000 || in.CreatedAt.IsZero() {
			t.Fatalf("AddServer did not fill in defaults: %+v", in)
		}
		got, err := b.cat.Server(ctx, "pg-eu-1")
		if err != nil {
			t.Fatalf("Server: %v", err)
		}
		if got.DSN != in.DSN || got.Region != "eu-west" || got.Capacity != 1000 || !got.CreatedAt.Equal(in.CreatedAt) {
			t.Fatalf("Server: got %+v, want %+v", got, in)
		}
	})

	t.Run("BadName", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{"", "Pg1", "1pg", "pg_1", "pg 1", "-pg", "pé", `x"; DROP TABLE catalog.servers; --`, "pg\x00", "p" + strings.Repeat("g", 63)} {
			err := b.cat.AddServer(ctx, &tenancy.Server{Name: name, DSN: "postgres://a@h/db"})
			tenanttest.WantCode(t, "AddServer "+strings.ToValidUTF8(name, "?"), err, tenancy.CodeInvalid)
		}
	})

	t.Run("BadDSN", func(t *testing.T) {
		t.Parallel()
		for _, dsn := range []string{"", "postgres://u:s3cret@host:notaport/db", "host=x port=abc password=s3cret", "not a dsn at all"} {
			err := b.cat.AddServer(ctx, &tenancy.Server{Name: pgtest.UniqueName("pg"), DSN: dsn})
			tenanttest.WantCode(t, "AddServer with DSN "+dsn, err, tenancy.CodeInvalid)
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the DSN's password: %v", err)
			}
			if dsn == "" {
				continue
			}
			err = b.cat.AddServer(ctx, &tenancy.Server{Name: pgtest.UniqueName("pg"), DSN: "postgres://a@h/db", AppDSN: dsn})
			tenanttest.WantCode(t, "AddServer with app DSN "+dsn, err, tenancy.CodeInvalid)
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the app DSN's password: %v", err)
			}
		}
	})

	t.Run("NegativeCapacity", func(t *testing.T) {
		t.Parallel()
		err := b.cat.AddServer(ctx, &tenancy.Server{Name: pgtest.UniqueName("pg"), DSN: "postgres://a@h/db", Capacity: -1})
		tenanttest.WantCode(t, "AddServer with capacity -1", err, tenancy.CodeInvalid)
	})

	t.Run("Duplicate", func(t *testing.T) {
		t.Parallel()
		err := b.cat.AddServer(ctx, &tenancy.Server{Name: b.server, DSN: "postgres://other@h/db"})
		tenanttest.WantCode(t, "AddServer of an existing name", err, tenancy.CodeConflict)
		got, err := b.cat.Server(ctx, b.server)
		if err != nil || got.DSN != "postgres://admin@db.invalid:5432/shared" {
			t.Fatalf("the existing server changed: %+v, %v", got, err)
		}
	})

	t.Run("UnknownServer", func(t *testing.T) {
		t.Parallel()
		_, err := b.cat.Server(ctx, "no-such-server")
		tenanttest.WantCode(t, "Server of an unknown name", err, tenancy.CodeNotFound)
	})
}

func TestCreateTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	t.Run("EveryModel", func(t *testing.T) {
		t.Parallel()
		for _, m := range tenancy.Models {
			tn := b.newTenant(m)
			if err := b.cat.CreateTenant(ctx, tn); err != nil {
				t.Fatalf("CreateTenant %s: %v", m, err)
			}
			if tn.ID == uuid.Nil || tn.Version != 1 || tn.CreatedAt.IsZero() || !tn.UpdatedAt.Equal(tn.CreatedAt) {
				t.Fatalf("CreateTenant did not fill in the tenant: %+v", tn)
			}
			bySlug, err := b.cat.TenantBySlug(ctx, tn.Slug)
			if err != nil {
				t.Fatalf("TenantBySlug: %v", err)
			}
			byID, err := b.cat.Tenant(ctx, tn.ID)
			if err != nil {
				t.Fatalf("Tenant: %v", err)
			}
			for _, got := range []*tenancy.Tenant{bySlug, byID} {
				if got.ID != tn.ID || got.Slug != tn.Slug || got.Name != tn.Name || got.Model != m ||
					got.Placement != tn.Placement || got.Status != tenancy.StatusActive || got.Version != 1 ||
					got.DeletedAt != nil || !got.CreatedAt.Equal(tn.CreatedAt) {
					t.Fatalf("read back %+v, want %+v", got, tn)
				}
			}
		}
	})

	t.Run("DuplicateSlug", func(t *testing.T) {
		t.Parallel()
		first := b.createTenant(t, tenancy.ModelShared)
		again := b.newTenant(tenancy.ModelSchema)
		again.Slug = first.Slug
		tenanttest.WantCode(t, "CreateTenant with a used slug", b.cat.CreateTenant(ctx, again), tenancy.CodeConflict)
		got, err := b.cat.TenantBySlug(ctx, first.Slug)
		if err != nil || got.ID != first.ID || got.Model != tenancy.ModelShared || got.Version != 1 {
			t.Fatalf("the first tenant changed: %+v, %v", got, err)
		}
	})

	t.Run("DuplicateID", func(t *testing.T) {
		t.Parallel()
		first := b.createTenant(t, tenancy.ModelShared)
		again := b.newTenant(tenancy.ModelShared)
		again.ID = first.ID
		tenanttest.WantCode(t, "CreateTenant with a used id", b.cat.CreateTenant(ctx, again), tenancy.CodeConflict)
		if n := b.countTenants(t, again.Slug); n != 0 {
			t.Fatalf("%d rows with the second slug, want 0", n)
		}
	})

	t.Run("UnknownServer", func(t *testing.T) {
		t.Parallel()
		tn := b.newTenant(tenancy.ModelShared)
		tn.Placement.Server = "no-such-server"
		tenanttest.WantCode(t, "CreateTenant on an unknown server", b.cat.CreateTenant(ctx, tn), tenancy.CodeNotFound)
		if n := b.countTenants(t, tn.Slug); n != 0 {
			t.Fatalf("%d rows for the tenant, want 0", n)
		}
	})

	t.Run("HostileSlug", func(t *testing.T) {
		t.Parallel()
		for _, slug := range []string{`a"; DROP TABLE x; --`, `a'; DROP TABLE catalog.tenants; --`, "acme\x00", "Acme", "a\\b"} {
			tn := b.newTenant(tenancy.ModelSchema)
			tn.Slug = slug
			tenanttest.WantCode(t, "CreateTenant "+slug, b.cat.CreateTenant(ctx, tn), tenancy.CodeInvalid)
			if strings.IndexByte(slug, 0) < 0 { // PostgreSQL refuses NUL in text parameters
				if n := b.countTenants(t, slug); n != 0 {
					t.Fatalf("%d rows for slug %q, want 0", n, slug)
				}
			}
			_, err := b.cat.TenantBySlug(ctx, slug)
			tenanttest.WantCode(t, "TenantBySlug "+slug, err, tenancy.CodeInvalid)
		}
	})

	t.Run("InvalidModel", func(t *testing.T) {
		t.Parallel()
		tn := b.newTenant(tenancy.ModelShared)
		tn.Model = "cluster"
		tenanttest.WantCode(t, "CreateTenant in model cluster", b.cat.CreateTenant(ctx, tn), tenancy.CodeInvalid)
	})

	t.Run("UnknownTenant", func(t *testing.T) {
		t.Parallel()
		_, err := b.cat.Tenant(ctx, uuid.New())
		tenanttest.WantCode(t, "Tenant of an unknown id", err, tenancy.CodeNotFound)
		_, err = b.cat.TenantBySlug(ctx, "no-such-tenant")
		tenanttest.WantCode(t, "TenantBySlug of an unknown slug", err, tenancy.CodeNotFound)
		if !errors.Is(err, tenancy.ErrNotFound) {
			t.Fatalf("errors.Is(%v, ErrNotFound) = false", err)
		}
	})
}

func TestTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var want []*tenancy.Tenant
	for _, m := range tenancy.Models {
		want = append(want, b.createTenant(t, m))
	}
	suspended, err := b.cat.SetStatus(ctx, want[0].ID, tenancy.StatusSuspended, tenancy.StatusActive)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts *catalog.ListOpts
		want []uuid.UUID
	}{
		{"All", nil, []uuid.UUID{want[0].ID, want[1].ID, want[2].ID}},
		{"Model", &catalog.ListOpts{Model: tenancy.ModelSchema}, []uuid.UUID{want[1].ID}},
		{"Status", &catalog.ListOpts{Status: tenancy.StatusSuspended}, []uuid.UUID{suspended.ID}},
		{"Server", &catalog.ListOpts{Server: "no-such-server"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.cat.Tenants(ctx, tc.opts)
			if err != nil {
				t.Fatalf("Tenants: %v", err)
			}
			ids := map[uuid.UUID]bool{}
			for _, tn := range got {
				ids[tn.ID] = true
			}
			if len(ids) != len(tc.want) {
				t.Fatalf("Tenants(%+v): got %d tenants, want %d", tc.opts, len(got), len(tc.want))
			}
			for _, id := range tc.want {
				if !ids[id] {
					t.Fatalf("Tenants(%+v): %s missing", tc.opts, id)
				}
			}
		})
	}
}

func TestSetStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	t.Run("SuspendAndResume", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelShared)
		s, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusSuspended, tenancy.StatusActive)
		if err != nil {
			t.Fatalf("suspend: %v", err)
		}
		if s.Status != tenancy.StatusSuspended || s.Version != tn.Version+1 || !s.UpdatedAt.After(tn.UpdatedAt) || s.DeletedAt != nil {
			t.Fatalf("suspended: %+v (was %+v)", s, tn)
		}
		a, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusActive, tenancy.StatusSuspended)
		if err != nil {
			t.Fatalf("resume: %v", err)
		}
		if a.Status != tenancy.StatusActive || a.Version != s.Version+1 || !a.UpdatedAt.After(s.UpdatedAt) {
			t.Fatalf("resumed: %+v (was %+v)", a, s)
		}
		if got, err := b.cat.Tenant(ctx, tn.ID); err != nil || got.Version != a.Version || got.Status != tenancy.StatusActive {
			t.Fatalf("read back %+v, %v; want %+v", got, err, a)
		}
	})

	t.Run("ResumeNotSuspended", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelShared)
		_, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusActive, tenancy.StatusSuspended)
		tenanttest.WantCode(t, "resume an active tenant", err, tenancy.CodeConflict)
		if !errors.Is(err, tenancy.ErrConflict) {
			t.Fatalf("errors.Is(%v, ErrConflict) = false", err)
		}
		if got, err := b.cat.Tenant(ctx, tn.ID); err != nil || got.Version != tn.Version || got.Status != tenancy.StatusActive {
			t.Fatalf("a refused transition changed the tenant: %+v, %v", got, err)
		}
	})

	t.Run("NoFrom", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelShared)
		_, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusSuspended)
		tenanttest.WantCode(t, "SetStatus from no status", err, tenancy.CodeConflict)
	})

	t.Run("DeleteAndRestore", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelSchema)
		d, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusDeleted, tenancy.StatusActive, tenancy.StatusSuspended)
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		if d.Status != tenancy.StatusDeleted || d.DeletedAt == nil || d.DeletedAt.Before(tn.CreatedAt) || d.Version != tn.Version+1 {
			t.Fatalf("deleted: %+v", d)
		}
		if got, err := b.cat.Tenant(ctx, tn.ID); err != nil || got.DeletedAt == nil || !got.DeletedAt.Equal(*d.DeletedAt) {
			t.Fatalf("deleted tenant read back %+v, %v: want deleted_at %v", got, err, d.DeletedAt)
		}
		// Deleting again is refused: deleted is not in from.
		_, err = b.cat.SetStatus(ctx, tn.ID, tenancy.StatusDeleted, tenancy.StatusActive, tenancy.StatusSuspended)
		tenanttest.WantCode(t, "delete a deleted tenant", err, tenancy.CodeConflict)

		r, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusActive, tenancy.StatusDeleted)
		if err != nil {
			t.Fatalf("restore: %v", err)
		}
		if r.Status != tenancy.StatusActive || r.DeletedAt != nil || r.Version != d.Version+1 {
			t.Fatalf("restored: %+v", r)
		}
		if got, err := b.cat.Tenant(ctx, tn.ID); err != nil || got.DeletedAt != nil {
			t.Fatalf("restored tenant read back %+v, %v: want no deleted_at", got, err)
		}
	})

	t.Run("SuspendKeepsDeletedAtUnset", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelShared)
		s, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusSuspended, tenancy.StatusActive)
		if err != nil || s.DeletedAt != nil {
			t.Fatalf("suspend: %+v, %v; want no deleted_at", s, err)
		}
	})

	t.Run("UnknownTenant", func(t *testing.T) {
		t.Parallel()
		_, err := b.cat.SetStatus(ctx, uuid.New(), tenancy.StatusSuspended, tenancy.StatusActive)
		tenanttest.WantCode(t, "SetStatus of an unknown tenant", err, tenancy.CodeNotFound)
	})
}

func TestTenantKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("Stable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		k1, err := b.cat.TenantKey(ctx)
		if err != nil {
			t.Fatalf("TenantKey: %v", err)
		}
		if len(k1) != 32 || bytes.Equal(k1, make([]byte, 32)) {
			t.Fatalf("TenantKey: got %d bytes %x, want 32 random bytes", len(k1), k1)
		}
		k2, err := b.cat.TenantKey(ctx)
		if err != nil || !bytes.Equal(k1, k2) {
			t.Fatalf("TenantKey again: %x, %v; want %x", k2, err, k1)
		}
		k3, err := open(t, b.url).TenantKey(ctx)
		if err != nil || !bytes.Equal(k1, k3) {
			t.Fatalf("TenantKey from another handle: %x, %v; want %x", k3, err, k1)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		// Several processes start at once on a catalog without a key: all
		// must get the same key, none an error. The race is narrow, so it is
		// run several times, forgetting the key in between.
		b := setup(t)
		const n, rounds = 8, 20
		cats := make([]*catalog.Catalog, n)
		for i := range cats {
			cats[i] = open(t, b.url)
		}
		for round := range rounds {
			if _, err := b.cat.Pool().Exec(ctx, `DELETE FROM catalog.settings WHERE key = 'tenant_key'`); err != nil {
				t.Fatal(err)
			}
			keys, errs := make([][]byte, n), make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, cat := range cats {
				wg.Go(func() {
					<-start
					keys[i], errs[i] = cat.TenantKey(ctx)
				})
			}
			close(start)
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("round %d: TenantKey %d: %v", round, i, errs[i])
				}
				if !bytes.Equal(keys[i], keys[0]) {
					t.Fatalf("round %d: TenantKey %d: %x, but TenantKey 0: %x", round, i, keys[i], keys[0])
				}
			}
		}
	})
}
