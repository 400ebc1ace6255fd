package faults

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestKillCreateSchema is TestKillCreate for a schema-model tenant: the
// re-run leaves it active exactly once, with exactly its one schema in the
// server's shared database, its role, no database, and served.
func TestKillCreateSchema(t *testing.T) { killCreate(t, tenancy.ModelSchema) }

// window is how long after an operation's row appears in the catalog a kill
// may come: a little more than the operation's recorded duration in a
// reference run (the start-up of the process comes before the row), and at
// least 20ms.
func window(op time.Duration) time.Duration {
	return max(op*5/4, 20*time.Millisecond)
}

// duration runs query, which returns an interval, on the catalog with slug.
func (b *bundle) duration(t *testing.T, query, slug string) time.Duration {
	t.Helper()
	var secs float64
	if err := b.catalog(t).QueryRow(context.Background(), `SELECT extract(epoch FROM (`+query+`))`, slug).Scan(&secs); err != nil {
		t.Fatal(err)
	}
	return time.Duration(secs * float64(time.Second))
}

// checkStorage checks that server s holds exactly the storage of the
// tenant's model and placement: its one database (database model) or its one
// schema in the server's database dataDB (schema model), and its role.
func (b *bundle) checkStorage(t *testing.T, s *pgtest.Server, dataDB string, tn *tenancy.Tenant) {
	t.Helper()
	dbs, schemas := storageOn(t, s, dataDB, tn.Slug)
	// The tenant's storage, and the kind it must not have.
	own, other, want := dbs, schemas, tn.Placement.Database
	if tn.Model == tenancy.ModelSchema {
		own, other, want = schemas, dbs, tn.Placement.Schema
	}
	if !slices.Equal(own, []string{want}) || len(other) != 0 || !hasRole(t, s, tn.ID) {
		t.Fatalf("%s tenant %s on %s: databases %v, schemas %v, role %v; want its %s and role only",
			tn.Model, tn.Slug, s.Name(), dbs, schemas, hasRole(t, s, tn.ID), want)
	}
}

// hasRole reports whether server s has the tenant's role.
func hasRole(t *testing.T, s *pgtest.Server, tenant uuid.UUID) bool {
	t.Helper()
	var ok bool
	err := adminOn(t, s, "postgres").QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`,
		tenancy.RoleName(tenant)).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// catalog connects to the bundle's catalog database.
func (b *bundle) catalog(t *testing.T) *pgx.Conn {
	t.Helper()
	return b.admin(t, strings.TrimPrefix(mustPath(t, b.catalogURL), "/"))
}
