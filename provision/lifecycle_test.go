package provision_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/provision"
)

// insertCompany writes a row for tn through the router and returns its id.
func (b *testBundle) insertCompany(t *testing.T, tn *tenancy.Tenant, name string) int64 {
	t.Helper()
	var id int64
	if err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `INSERT INTO companies (tenant_id, name) VALUES ($1, $2) RETURNING id`, tn.ID, name).Scan(&id)
	}); err != nil {
		t.Fatalf("insert for %s: %v", tn.Slug, err)
	}
	return id
}

// companies counts tn's rows in its storage, as the superuser (whatever its
// status), or -1 when the storage is gone.
func (b *testBundle) companies(t *testing.T, tn *tenancy.Tenant) int {
	t.Helper()
	ctx := context.Background()
	if tn.Model == tenancy.ModelDatabase && !b.databaseExists(t, tn.Placement.Database) ||
		tn.Model == tenancy.ModelSchema && !b.schemaExists(t, tn.Placement.Schema) {
		return -1
	}
	var q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	} = b.admin
	if tn.Model == tenancy.ModelDatabase {
		conn, err := pgx.Connect(ctx, b.Server(tn.Placement.Server).URL(tn.Placement.Database))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		q = conn
	}
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM `+dataplane.Ident(tn.Placement.Schema, "companies")+` WHERE tenant_id = $1`, tn.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitServe waits until the router (behind the catalog cache, which follows
// changes asynchronously) answers tn's transactions with code, "" for success.
func (b *testBundle) waitServe(t *testing.T, tn *tenancy.Tenant, code tenancy.Code) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			var n int
			return tx.QueryRow(context.Background(), `SELECT count(*) FROM companies`).Scan(&n)
		})
		got := tenancy.Code("")
		if err != nil {
			got = tenancy.ErrorCode(err)
		}
		if got == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serving %s: %v (code %q); want code %q", tn.Slug, err, got, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backdate moves a deleted tenant's deletion into the past.
func (b *testBundle) backdate(t *testing.T, tn *tenancy.Tenant, d time.Duration) {
	t.Helper()
	if _, err := b.Platform.Catalog.Pool().Exec(context.Background(),
		`UPDATE catalog.tenants SET deleted_at = deleted_at - $2::interval WHERE id = $1`, tn.ID, d); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycle takes a tenant of each model through suspend, resume, delete,
// restore and purge, checks what is served and what is kept at each stage,
// and that every refused transition changes nothing.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A shared neighbour whose rows must survive the purge of a shared tenant.
	neighbour := b.CreateTenant(t, tenancy.ModelShared, b.server)
	b.insertCompany(t, neighbour, "neighbour")

	for _, m := range tenancy.Models {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pv := b.Platform.Provisioner
			tn := b.CreateTenant(t, m, b.server)
			b.insertCompany(t, tn, "kept")
			b.insertCompany(t, tn, "also kept")

			// refused checks that an operation fails with code and changes
			// nothing in the catalog.
			refused := func(what string, code tenancy.Code, op func() (*tenancy.Tenant, error)) {
				t.Helper()
				before, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
				if err != nil {
					t.Fatal(err)
				}
				_, err = op()
				tenanttest.WantCode(t, what, err, code)
				after, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
				if err != nil || after.Version != before.Version || after.Status != before.Status {
					t.Fatalf("%s changed the tenant: %+v → %+v (%v)", what, before, after, err)
				}
			}
			purge := func() (*tenancy.Tenant, error) {
				return pv.Purge(ctx, tn.Slug, &provision.PurgeOpts{Confirm: tn.Slug})
			}

			refused("Unsuspend an active tenant", tenancy.CodeConflict, func() (*tenancy.Tenant, error) { return pv.Unsuspend(ctx, tn.Slug) })
			refused("Restore an active tenant", tenancy.CodeConflict, func() (*tenancy.Tenant, error) { return pv.Restore(ctx, tn.Slug) })
			refused("Purge an active tenant", tenancy.CodeConflict, purge)

			got, err := pv.Suspend(ctx, tn.Slug)
			if err != nil || got.Status != tenancy.StatusSuspended {
				t.Fatalf("Suspend: %+v, %v", got, err)
			}
			b.waitServe(t, tn, tenancy.CodeSuspended)
			refused("Suspend a suspended tenant", tenancy.CodeConflict, func() (*tenancy.Tenant, error) { return pv.Suspend(ctx, tn.Slug) })
			if got, err = pv.Unsuspend(ctx, tn.Slug); err != nil || got.Status != tenancy.StatusActive {
				t.Fatalf("Unsuspend: %+v, %v", got, err)
			}
			b.waitServe(t, tn, "")

			if got, err = pv.Delete(ctx, tn.Slug); err != nil || got.Status != tenancy.StatusDeleted || got.DeletedAt == nil {
				t.Fatalf("Delete: %+v, %v", got, err)
			}
			b.waitServe(t, tn, tenancy.CodeGone)
			if n := b.companies(t, tn); n != 2 {
				t.Fatalf("a deleted tenant has %d rows, want its 2 kept", n)
			}
			refused("Suspend a deleted tenant", tenancy.CodeConflict, func() (*tenancy.Tenant, error) { return pv.Suspend(ctx, tn.Slug) })
			refused("Delete a deleted tenant", tenancy.CodeConflict, func() (*tenancy.Tenant, error) { return pv.Delete(ctx, tn.Slug) })
			refused("Purge without confirmation", tenancy.CodeInvalid, func() (*tenancy.Tenant, error) { return pv.Purge(ctx, tn.Slug, nil) })
			refused("Purge confirmed with another slug", tenancy.CodeInvalid, func() (*tenancy.Tenant, error) {
				return pv.Purge(ctx, tn.Slug, &provision.PurgeOpts{Confirm: neighbour.Slug})
			})
			_, err = purge()
			if tenancy.ErrorCode(err) != tenancy.CodeConflict || !strings.Contains(err.Error(), "can be purged from") {
				t.Fatalf("Purge within retention: %v; want a conflict that says when", err)
			}
			if n := b.companies(t, tn); n != 2 {
				t.Fatalf("after refused purges the tenant has %d rows, want 2", n)
			}

			if got, err = pv.Restore(ctx, tn.Slug); err != nil || got.Status != tenancy.StatusActive || got.DeletedAt != nil {
				t.Fatalf("Restore: %+v, %v", got, err)
			}
			b.waitServe(t, tn, "")
			if n := b.companies(t, tn); n != 2 {
				t.Fatalf("restored tenant has %d rows, want 2", n)
			}

			// Suspended, then deleted: restore brings it back suspended.
			if _, err := pv.Suspend(ctx, tn.Slug); err != nil {
				t.Fatal(err)
			}
			if _, err := pv.Delete(ctx, tn.Slug); err != nil {
				t.Fatal(err)
			}
			if got, err = pv.Restore(ctx, tn.Slug); err != nil || got.Status != tenancy.StatusSuspended {
				t.Fatalf("Restore of a tenant deleted while suspended: %+v, %v; want it suspended", got, err)
			}
			if _, err := pv.Delete(ctx, tn.Slug); err != nil {
				t.Fatal(err)
			}

			// A day short of the retention: refused; past it: purged.
			b.backdate(t, tn, provision.DefaultRetention-24*time.Hour)
			refused("Purge a day before the retention ends", tenancy.CodeConflict, purge)
			b.backdate(t, tn, 25*time.Hour)
			got, err = purge()
			if err != nil || got.Status != tenancy.StatusPurged || got.ID != tn.ID || got.DeletedAt == nil {
				t.Fatalf("Purge: %+v, %v", got, err)
			}
			b.checkPurged(t, tn)
			if n := b.companies(t, neighbour); n != 1 {
				t.Fatalf("the shared neighbour has %d rows after the purge, want 1", n)
			}
			b.waitServe(t, tn, tenancy.CodeGone)
			refused("Restore a purged tenant", tenancy.CodeConflict, func() (*tenancy.Tenant, error) { return pv.Restore(ctx, tn.Slug) })
			refused("Purge a purged tenant", tenancy.CodeConflict, purge)
			refused("Create over a tombstone", tenancy.CodeConflict, func() (*tenancy.Tenant, error) {
				return pv.Create(ctx, &provision.CreateOpts{Slug: tn.Slug, Model: m, Server: b.server})
			})

			want := "tenant_created suspended resumed deleted restored suspended deleted restored deleted purged"
			if ev := b.events(t, tn.ID); strings.Join(ev, " ") != want {
				t.Fatalf("events:\n%v\nwant\n%s", ev, want)
			}
		})
	}
}

// checkPurged fails unless nothing of tn's data is left: no schema, database
// or role, no row in the shared tables (its audit log included), and its
// catalog row is a tombstone.
func (b *testBundle) checkPurged(t *testing.T, tn *tenancy.Tenant) {
	t.Helper()
	ctx := context.Background()
	if b.schemaExists(t, storageName(tn.Slug)) || b.databaseExists(t, storageName(tn.Slug)) {
		t.Fatalf("%s: storage left after purge", tn.Slug)
	}
	if tn.Model != tenancy.ModelShared && b.roleExists(t, tn.Role()) {
		t.Fatalf("%s: role left after purge", tn.Slug)
	}
	for _, table := range []string{"companies", "contacts", "deals", dataplane.AuditTable, dataplane.AuditHeadTable} {
		var n int
		if err := b.admin.QueryRow(ctx, `SELECT count(*) FROM `+dataplane.Ident(provision.SharedSchema, table)+` WHERE tenant_id = $1`, tn.ID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s: %d rows left in shared.%s (%v)", tn.Slug, n, table, err)
		}
	}
	got, err := b.Platform.Catalog.TenantBySlug(ctx, tn.Slug)
	if err != nil || got.Status != tenancy.StatusPurged || got.ID != tn.ID {
		t.Fatalf("tombstone: %+v, %v", got, err)
	}
}

// TestPurgeFailureAtEveryStep makes a purge fail, or the process die,
// before and after every step of every model, then purges again and checks
// that it converges.
func TestPurgeFailureAtEveryStep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, m := range tenancy.Models {
		for _, name := range purgeSteps[m] {
			for _, after := range []bool{false, true} {
				if after && name == "tombstone" {
					continue
				}
				for _, panics := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%s_%s/%s", m, map[bool]string{false: "Before", true: "After"}[after], name,
						map[bool]string{false: "Error", true: "Crash"}[panics]), func(t *testing.T) {
						t.Parallel()
						ctx := context.Background()
						f := b.failpoint(t, catalog.OpPurge, name, after, panics, &provision.Config{Retention: time.Nanosecond})
						tn := b.CreateTenant(t, m, b.server)
						b.insertCompany(t, tn, "doomed")
						if _, err := f.Delete(ctx, tn.Slug); err != nil {
							t.Fatal(err)
						}
						var err error
						died := crashed(t, func() { _, err = f.Purge(ctx, tn.Slug, &provision.PurgeOpts{Confirm: tn.Slug}) })
						if died != panics || (!panics && err == nil) {
							t.Fatalf("Purge: died %v, %v; want the injected failure", died, err)
						}
						left, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
						if err != nil || left.Status != tenancy.StatusDeleted {
							t.Fatalf("after the failure: %+v, %v; want the tenant still deleted", left, err)
						}
						op := b.operation(t, tn.Slug, catalog.OpPurge)
						if !op.State.Open() {
							t.Fatalf("purge operation %s; want it open", op.State)
						}
						// Neither restored nor rolled back half-purged.
						_, err = f.Restore(ctx, tn.Slug)
						tenanttest.WantCode(t, "Restore during a purge", err, tenancy.CodeConflict)
						tenanttest.WantCode(t, "Rollback a purge", f.Rollback(ctx, tn.Slug), tenancy.CodeConflict)

						got, err := f.Purge(ctx, tn.Slug, &provision.PurgeOpts{Confirm: tn.Slug})
						if err != nil || got.Status != tenancy.StatusPurged {
							t.Fatalf("Purge again: %+v, %v", got, err)
						}
						b.checkPurged(t, tn)
						if op := b.operation(t, tn.Slug, catalog.OpPurge); op.State != catalog.OpDone ||
							strings.Join(op.Steps, ",") != strings.Join(purgeSteps[m], ",") {
							t.Fatalf("purge operation %s, steps %v", op.State, op.Steps)
						}
						if ev := b.events(t, tn.ID); strings.Join(ev, " ") != "tenant_created deleted purged" {
							t.Fatalf("events %v", ev)
						}
					})
				}
			}
		}
	}
}

// TestTransitionsUnknownAndInvalid: operations on a slug that is not a
// tenant, or not a slug, fail before touching anything.
func TestTransitionsUnknownAndInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	pv := b.Platform.Provisioner
	ops := map[string]func(string) error{
		"Suspend":   func(s string) error { _, err := pv.Suspend(ctx, s); return err },
		"Unsuspend": func(s string) error { _, err := pv.Unsuspend(ctx, s); return err },
		"Delete":    func(s string) error { _, err := pv.Delete(ctx, s); return err },
		"Restore":   func(s string) error { _, err := pv.Restore(ctx, s); return err },
		"Purge":     func(s string) error { _, err := pv.Purge(ctx, s, &provision.PurgeOpts{Confirm: s}); return err },
		"Continue":  func(s string) error { _, err := pv.Continue(ctx, s); return err },
		"Rollback":  func(s string) error { return pv.Rollback(ctx, s) },
		"SetTier":   func(s string) error { _, err := pv.SetTier(ctx, s, "pro"); return err },
	}
	for name, op := range ops {
		tenanttest.WantCode(t, name+" of an unknown tenant", op("nobody-here"), tenancy.CodeNotFound)
		tenanttest.WantCode(t, name+" of a hostile slug", op(`x'; DROP TABLE catalog.tenants; --`), tenancy.CodeInvalid)
	}
	tn := b.CreateTenant(t, tenancy.ModelShared, b.server)
	tenanttest.WantCode(t, "Continue with nothing to continue", ops["Continue"](tn.Slug), tenancy.CodeConflict)
	tenanttest.WantCode(t, "Rollback an active tenant", ops["Rollback"](tn.Slug), tenancy.CodeConflict)
	_, err := pv.SetTier(ctx, tn.Slug, "Not A Tier")
	tenanttest.WantCode(t, "SetTier to a bad name", err, tenancy.CodeInvalid)
	got, err := pv.SetTier(ctx, tn.Slug, "enterprise")
	if err != nil || got.Tier != "enterprise" {
		t.Fatalf("SetTier: %+v, %v", got, err)
	}
	if ev := b.events(t, tn.ID); strings.Join(ev, " ") != "tenant_created tier_changed" {
		t.Fatalf("events %v", ev)
	}
	if _, err := provision.New(provision.Config{Catalog: b.Platform.Catalog, Model: b.Platform.Model, Key: []byte("k"), AppRole: "a", Retention: -time.Hour}); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
		t.Fatalf("negative retention: %v", err)
	}
}
