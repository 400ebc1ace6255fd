package provision_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/provision"
)

// The steps of each model's provisioning and purge, in order.
var (
	provisionSteps = map[tenancy.Model][]string{
		tenancy.ModelShared:   {"activate"},
		tenancy.ModelSchema:   {"role", "schema", "activate"},
		tenancy.ModelDatabase: {"role", "database", "data_model", "activate"},
	}
	purgeSteps = map[tenancy.Model][]string{
		tenancy.ModelShared:   {"rows", "tombstone"},
		tenancy.ModelSchema:   {"schema", "role", "tombstone"},
		tenancy.ModelDatabase: {"database", "role", "tombstone"},
	}
)

var errInjected = errors.New("injected failure")

// crash is the panic that stands for the process dying.
type crash struct{}

// failpoint is a provisioner of the bundle's platform whose operations fail
// once at one point: before or after a step of an operation kind.
type failpoint struct {
	*provision.Provisioner
	armed atomic.Bool
}

func (b *testBundle) failpoint(t *testing.T, kind catalog.OpKind, step string, after, panics bool, cfg *provision.Config) *failpoint {
	t.Helper()
	f := &failpoint{Provisioner: b.newProvisioner(t, crm.Migrations(), cfg)}
	f.armed.Store(true)
	provision.SetHook(f.Provisioner, func(k catalog.OpKind, s string, a bool) error {
		if k != kind || s != step || a != after || !f.armed.CompareAndSwap(true, false) {
			return nil
		}
		if panics {
			panic(crash{})
		}
		return fmt.Errorf("%s %s: %w", map[bool]string{false: "before", true: "after"}[after], step, errInjected)
	})
	return f
}

// newProvisioner returns a provisioner of the bundle's platform with the data
// model in fsys and the settings of cfg (nil: defaults).
func (b *testBundle) newProvisioner(t *testing.T, fsys fs.FS, cfg *provision.Config) *provision.Provisioner {
	t.Helper()
	model, err := datamodel.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	key, err := b.Platform.Catalog.TenantKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := provision.Config{}
	if cfg != nil {
		c = *cfg
	}
	c.Catalog, c.Model, c.Key, c.AppRole = b.Platform.Catalog, model, key, b.AppRole
	p, err := provision.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// crashed runs fn and reports whether it died of the injected crash.
func crashed(t *testing.T, fn func()) (died bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			died = true
		}
	}()
	fn()
	return false
}

// operation returns the last operation of a kind recorded for the slug.
func (b *testBundle) operation(t *testing.T, slug string, kind catalog.OpKind) *catalog.Operation {
	t.Helper()
	var id uuid.UUID
	if err := b.Platform.Catalog.Pool().QueryRow(context.Background(), `SELECT tenant_id FROM catalog.operations
		WHERE tenant_slug = $1 AND kind = $2 ORDER BY started_at DESC LIMIT 1`, slug, kind).Scan(&id); err != nil {
		t.Fatalf("no %s operation of %s: %v", kind, slug, err)
	}
	ops, err := b.Platform.Catalog.Operations(context.Background(), &catalog.OperationOpts{TenantID: id})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Kind == kind {
			return op
		}
	}
	t.Fatalf("no %s operation of %s", kind, slug)
	return nil
}

// events returns the kinds of the control-plane events of a tenant, in order.
func (b *testBundle) events(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	es, _, err := b.Platform.Catalog.Events(context.Background(), &catalog.EventOpts{TenantID: id})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range es {
		kinds = append(kinds, string(e.Kind))
	}
	return kinds
}

// checkServed fails unless tn is active in the catalog, its storage is at
// the data model's latest version with its tenant tables protected, and the
// router serves it.
func (b *testBundle) checkServed(t *testing.T, tn *tenancy.Tenant) {
	t.Helper()
	ctx := context.Background()
	got, err := b.Platform.Catalog.TenantBySlug(ctx, tn.Slug)
	if err != nil || got.Status != tenancy.StatusActive || got.ID != tn.ID {
		t.Fatalf("catalog: %+v, %v; want %s active", got, err, tn.Slug)
	}
	var db interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	} = b.admin
	if tn.Model == tenancy.ModelDatabase {
		db = b.AdminConn(t, tn)
	}
	var version int
	if err := db.QueryRow(ctx, `SELECT max(version) FROM `+dataplane.Ident(tn.Placement.Schema, datamodel.VersionTable)).Scan(&version); err != nil || version != b.Platform.Model.Latest() {
		t.Fatalf("data model version %d, %v; want %d", version, err, b.Platform.Model.Latest())
	}
	var forced, pinned int
	if err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE c.relrowsecurity AND c.relforcerowsecurity),
			count(*) FILTER (WHERE EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conname = $2))
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname IN ('companies', 'contacts', 'deals')`,
		tn.Placement.Schema, datamodel.PinConstraint).Scan(&forced, &pinned); err != nil || forced != 3 {
		t.Fatalf("%d tenant tables with Row-Level Security forced, %v; want 3", forced, err)
	}
	if wantPinned := map[bool]int{true: 0, false: 3}[tn.Model == tenancy.ModelShared]; pinned != wantPinned {
		t.Fatalf("%d tenant tables pinned to the tenant, want %d", pinned, wantPinned)
	}
	var name string
	err = b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'served') RETURNING name`, tn.ID).Scan(&name)
	})
	if err != nil || name != "served" {
		t.Fatalf("insert through the router: %q, %v", name, err)
	}
}

// TestProvisionFailureAtEveryStep makes provisioning fail, or the process
// die, before and after every step of every model, then checks that the
// tenant converges: rolled back with no trace after an error; after a crash,
// left provisioning (never active without storage, never storage without its
// row) and then finished by Continue or by creating it again, or removed by
// Rollback.
func TestProvisionFailureAtEveryStep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, m := range tenancy.Models {
		for i, name := range provisionSteps[m] {
			for _, after := range []bool{false, true} {
				if after && name == "activate" {
					continue // the operation is done once activate commits
				}
				for _, then := range []string{"Error", "CrashContinue", "CrashCreateAgain", "CrashRollback"} {
					when := map[bool]string{false: "Before", true: "After"}[after]
					t.Run(fmt.Sprintf("%s/%s_%s/%s", m, when, name, then), func(t *testing.T) {
						t.Parallel()
						ctx := context.Background()
						f := b.failpoint(t, catalog.OpProvision, name, after, then != "Error", nil)
						slug := pgtest.UniqueName("fp-")
						opts := &provision.CreateOpts{Slug: slug, Model: m, Server: b.server}
						var tn *tenancy.Tenant
						var err error
						died := crashed(t, func() { tn, err = b.create(t, f.Provisioner, opts) })

						if then == "Error" {
							if died || !errors.Is(err, errInjected) || tn != nil {
								t.Fatalf("Create: %+v, %v; want the injected error", tn, err)
							}
							op := b.operation(t, slug, catalog.OpProvision)
							if op.State != catalog.OpRolledBack {
								t.Fatalf("operation %+v; want rolled back", op)
							}
							b.noTrace(t, slug, op.TenantID)
							if ev := b.events(t, op.TenantID); strings.Join(ev, " ") != "rolled_back" {
								t.Fatalf("events %v; want rolled_back", ev)
							}
							return
						}
						if !died {
							t.Fatalf("Create did not reach the failpoint: %+v, %v", tn, err)
						}
						// Left provisioning, with the steps done so far.
						left, err := b.Platform.Catalog.TenantBySlug(ctx, slug)
						if err != nil || left.Status != tenancy.StatusProvisioning {
							t.Fatalf("after the crash: %+v, %v; want the tenant provisioning", left, err)
						}
						t.Cleanup(func() { b.dropClusterObjects(left) })
						tenanttest.WantCode(t, "serving a provisioning tenant", left.CheckServable(), tenancy.CodeUnavailable)
						op := b.operation(t, slug, catalog.OpProvision)
						done := provisionSteps[m][:i]
						if after {
							done = provisionSteps[m][:i+1]
						}
						if op.State != catalog.OpRunning || strings.Join(op.Steps, ",") != strings.Join(done, ",") {
							t.Fatalf("operation %s, steps %v; want running with %v", op.State, op.Steps, done)
						}
						// A second operation is refused while this one is open.
						_, err = b.Platform.Provisioner.Delete(ctx, slug)
						tenanttest.WantCode(t, "Delete during provisioning", err, tenancy.CodeConflict)

						switch then {
						case "CrashContinue":
							tn, err = b.Platform.Provisioner.Continue(ctx, slug)
						case "CrashCreateAgain":
							tn, err = b.Platform.Provisioner.Create(ctx, opts)
						case "CrashRollback":
							if err := b.Platform.Provisioner.Rollback(ctx, slug); err != nil {
								t.Fatalf("Rollback: %v", err)
							}
							b.noTrace(t, slug, left.ID)
							if op := b.operation(t, slug, catalog.OpProvision); op.State != catalog.OpRolledBack {
								t.Fatalf("operation %s after Rollback", op.State)
							}
							// The slug is free again.
							if _, err := b.create(t, b.Platform.Provisioner, opts); err != nil {
								t.Fatalf("Create after Rollback: %v", err)
							}
							return
						}
						if err != nil {
							t.Fatalf("%s: %v", then, err)
						}
						b.checkServed(t, tn)
						if op := b.operation(t, slug, catalog.OpProvision); op.State != catalog.OpDone ||
							strings.Join(op.Steps, ",") != strings.Join(provisionSteps[m], ",") {
							t.Fatalf("operation %s, steps %v; want done with every step", op.State, op.Steps)
						}
						if ev := b.events(t, tn.ID); strings.Join(ev, " ") != "tenant_created" {
							t.Fatalf("events %v; want tenant_created once", ev)
						}
						// Nothing left to continue.
						_, err = b.Platform.Provisioner.Continue(ctx, slug)
						tenanttest.WantCode(t, "Continue a finished provisioning", err, tenancy.CodeConflict)
					})
				}
			}
		}
	}
}
