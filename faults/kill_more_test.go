package faults

import (
	"context"
	"fmt"
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

// TestKillPurge kills "tenants purge" of a deleted tenant, in the schema and
// the database model, at a random moment after the purge's operation appears
// in the catalog, three times each. Right after the kill the tenant is
// deleted or purged, never served, and cannot be restored (a restore would
// make it active without its storage); purged only once its storage is gone.
// Running the same purge again finishes it: the catalog keeps one tombstone
// (purged, one purged event, no unfinished operation), and the server keeps
// no database, schema or role of the tenant.
func TestKillPurge(t *testing.T) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	for _, model := range []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase} {
		t.Run(string(model), func(t *testing.T) { b.killPurge(t, dataDB, model) })
	}
}

func (b *bundle) killPurge(t *testing.T, dataDB string, model tenancy.Model) {
	deleted := func() *tenancy.Tenant {
		slug := pgtest.UniqueName("kp")
		b.slugs = append(b.slugs, slug)
		b.mustRun(t, "tenants", "create", slug, "--model", string(model))
		b.mustRun(t, "tenants", "delete", slug)
		return b.tenant(t, slug)
	}
	purge := func(slug string) []string {
		return []string{"tenants", "purge", slug, "--confirm", slug, "--retention", "1ms"}
	}
	// The first database tenant of a server also builds its template.
	ref := deleted().Slug
	full := b.timed(t, purge(ref)...)
	op := b.duration(t, `SELECT finished_at - started_at FROM catalog.operations WHERE tenant_slug = $1 AND kind = 'purge'`, ref)
	t.Logf("a %s tenant purged in %v, %v of it recorded as the purge's operation", model, full, op)

	const runs = 3
	var killed int
	for i := range runs {
		tn := deleted()
		args := purge(tn.Slug)
		started := b.exists(t, `SELECT EXISTS (SELECT 1 FROM catalog.operations WHERE tenant_slug = $1 AND kind = 'purge')`, tn.Slug)
		k, after := b.runAndKill(t, started, 0, window(op), args...)
		if k {
			killed++
		}
		status := b.checkHalfPurged(t, dataDB, tn)
		b.converge(t, fmt.Sprintf("tenant %q was already purged", tn.Slug), args...)
		b.checkPurged(t, dataDB, tn)
		t.Logf("run %d: killed %v after %v, left %s; converged", i, k, after, status)
	}
	t.Logf("%d of %d runs killed mid-way", killed, runs)
	if killed == 0 {
		t.Error("no run was killed before it ended")
	}
}

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

// checkHalfPurged checks a tenant whose purge was killed: it is deleted or
// purged (purged only with its storage gone), refused to its callers, and
// cannot be restored. It returns a description of what the kill left.
func (b *bundle) checkHalfPurged(t *testing.T, dataDB string, tn *tenancy.Tenant) string {
	t.Helper()
	status := b.status(t, tn.Slug)
	switch status {
	case tenancy.StatusPurged:
		b.checkNoStorage(t, b.server, dataDB, tn)
	case tenancy.StatusDeleted:
	default:
		t.Fatalf("tenant %s is %s after a killed purge; want deleted or purged", tn.Slug, status)
	}
	if out, err := b.run(t, "tenants", "restore", tn.Slug); err == nil {
		t.Fatalf("a tenant whose purge was killed (%s) was restored:\n%s", status, out)
	}
	if got := b.status(t, tn.Slug); got != status {
		t.Fatalf("a refused restore changed the tenant from %s to %s", status, got)
	}
	p := b.openPlatform(t)
	if _, err := p.TenantContext(context.Background(), tn.Slug); err == nil {
		t.Fatalf("tenant %s (%s) is served after a killed purge", tn.Slug, status)
	}
	var step, state string
	err := b.catalog(t).QueryRow(context.Background(), `SELECT step, state FROM catalog.operations WHERE tenant_id = $1 AND kind = 'purge'`,
		tn.ID).Scan(&step, &state)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s, purge %s at step %q", status, state, step)
}

// checkPurged checks a finished purge: one tombstone in the catalog and
// nothing of the tenant on the server.
func (b *bundle) checkPurged(t *testing.T, dataDB string, tn *tenancy.Tenant) {
	t.Helper()
	var n, open, events int
	var status string
	err := b.catalog(t).QueryRow(context.Background(), `SELECT count(*), min(status),
		(SELECT count(*) FROM catalog.operations WHERE tenant_id = $1 AND state IN ('running', 'failed')),
		(SELECT count(*) FROM catalog.events WHERE tenant_id = $1 AND kind = 'purged')
		FROM catalog.tenants WHERE id = $1`, tn.ID).Scan(&n, &status, &open, &events)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || status != string(tenancy.StatusPurged) || open != 0 || events != 1 {
		t.Fatalf("catalog: %d tenants %q in status %q, %d unfinished operations, %d purged events; want one purged, none unfinished, one event",
			n, tn.Slug, status, open, events)
	}
	b.checkNoStorage(t, b.server, dataDB, tn)
}

// checkNoStorage checks that server s holds no database, schema (in its
// database dataDB) or role of the tenant.
func (b *bundle) checkNoStorage(t *testing.T, s *pgtest.Server, dataDB string, tn *tenancy.Tenant) {
	t.Helper()
	dbs, schemas := storageOn(t, s, dataDB, tn.Slug)
	if len(dbs) != 0 || len(schemas) != 0 || hasRole(t, s, tn.ID) {
		t.Fatalf("tenant %s on %s: databases %v, schemas %v, role %v; want none", tn.Slug, s.Name(), dbs, schemas, hasRole(t, s, tn.ID))
	}
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

// status is the catalog's status of the tenant.
func (b *bundle) status(t *testing.T, slug string) tenancy.Status {
	t.Helper()
	var s tenancy.Status
	if err := b.catalog(t).QueryRow(context.Background(), `SELECT status FROM catalog.tenants WHERE slug = $1`, slug).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
