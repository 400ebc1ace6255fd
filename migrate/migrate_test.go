package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/provision"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// labels is the migration the tests roll out: a column, an index and a table,
// so that a half-applied migration would show.
const labels = `ALTER TABLE contacts ADD COLUMN label text;
CREATE INDEX contacts_label_idx ON contacts (tenant_id, label);
CREATE TABLE labels (
    tenant_id uuid NOT NULL,
    id        bigint GENERATED ALWAYS AS IDENTITY,
    name      text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
`

// crmLatest is the version of the example CRM's newest migration: the
// tests' extra migrations come after it.
var crmLatest = func() int {
	m, err := datamodel.Load(crm.Migrations())
	if err != nil {
		panic(err)
	}
	return m.Latest()
}()

// v is the version of the test migration named n (1, 2, …) after the CRM's.
func v(n int) int { return crmLatest + n }

// modelWith is the example CRM's data model plus extra migrations, named
// "1_labels.sql", "2_more.sql", …: numbered after the CRM's own.
func modelWith(t testing.TB, extra map[string]string) *datamodel.Model {
	t.Helper()
	files := fstest.MapFS{}
	err := fs.WalkDir(crm.Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(crm.Migrations(), path)
		files[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, sql := range extra {
		n, rest, _ := strings.Cut(name, "_")
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("extra migration %q: want a name like 1_labels.sql", name)
		}
		files[fmt.Sprintf("%03d_%s", v(i), rest)] = &fstest.MapFile{Data: []byte(sql)}
	}
	m, err := datamodel.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// testBundle is a fleet on two servers with two tenants of each model: six
// targets (two shared, two schemas, two databases).
type testBundle struct {
	*tenanttest.Bundle
	model *datamodel.Model // with 003_labels
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := tenanttest.Setup(t, &tenanttest.Opts{Servers: 2, PerModel: 2})
	return &testBundle{Bundle: b, model: modelWith(t, map[string]string{"1_labels.sql": labels})}
}

func (b *testBundle) migrator(t testing.TB, cfg *migrate.Config) *migrate.Migrator {
	t.Helper()
	c := migrate.Config{}
	if cfg != nil {
		c = *cfg
	}
	c.Catalog, c.AppRole, c.SharedSchema = b.Platform.Catalog, b.AppRole, provision.SharedSchema
	if c.Model == nil {
		c.Model = b.model
	}
	m, err := migrate.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tenant returns the bundle's first tenant of model m.
func (b *testBundle) tenant(m tenancy.Model) *tenancy.Tenant {
	for _, tn := range b.Tenants {
		if tn.Model == m {
			return tn
		}
	}
	panic("no tenant of model " + m)
}

// exec runs sql as the administrator in the database holding tn.
func (b *testBundle) exec(t testing.TB, tn *tenancy.Tenant, sql string) {
	t.Helper()
	if _, err := b.AdminConn(t, tn).Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// versions returns how often each version is recorded in tn's version table.
func (b *testBundle) versions(t testing.TB, tn *tenancy.Tenant) map[int]int {
	t.Helper()
	rows, err := b.AdminConn(t, tn).Query(context.Background(),
		`SELECT version, count(*) FROM `+dataplane.Ident(tn.Placement.Schema, datamodel.VersionTable)+` GROUP BY version`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for rows.Next() {
		var v, n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		out[v] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// hasColumn reports whether contacts has the label column in tn's schema.
func (b *testBundle) hasColumn(t testing.TB, tn *tenancy.Tenant) bool {
	t.Helper()
	var ok bool
	err := b.AdminConn(t, tn).QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = 'contacts' AND column_name = 'label')`, tn.Placement.Schema).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func outcomes(r *migrate.Report) map[string]migrate.Outcome {
	out := map[string]migrate.Outcome{}
	for _, res := range r.Results {
		out[res.Target.String()] = res.Outcome
	}
	return out
}

func TestUpMigratesEveryTarget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := b.migrator(t, nil)
	ctx := context.Background()

	before, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 6 {
		t.Fatalf("status lists %d targets, want 6 (2 shared, 2 schemas, 2 databases): %+v", len(before), before)
	}
	for _, st := range before {
		if st.Summary != "behind" || st.State.Version != v(0) || len(st.State.Pending) != 1 || st.State.Pending[0] != v(1) {
			t.Errorf("before: %s is %s %+v, want behind at %d with %d pending", st.Target, st.Summary, st.State, v(0), v(1))
		}
	}

	rep, err := m.Up(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Migrated != 6 || rep.Failed != 0 || rep.Skipped != 0 {
		t.Fatalf("first run: %+v", outcomes(rep))
	}
	for _, res := range rep.Results {
		if res.From != v(0) || res.To != v(1) || res.Applied != 1 {
			t.Errorf("%s: from %d to %d, %d applied; want %d → %d, 1 applied", res.Target, res.From, res.To, res.Applied, v(0), v(1))
		}
	}
	after, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range after {
		if st.Summary != "current" || st.State.Version != v(1) {
			t.Errorf("after: %s is %s %+v, want current at 3", st.Target, st.Summary, st.State)
		}
	}

	// The new table is a protected tenant table in every model, and tenants
	// can use the new column through the router.
	for _, tn := range b.Tenants {
		var forced bool
		err := b.AdminConn(t, tn).QueryRow(ctx, `SELECT relforcerowsecurity FROM pg_class WHERE oid = $1::regclass`,
			dataplane.Ident(tn.Placement.Schema, "labels")).Scan(&forced)
		if err != nil || !forced {
			t.Errorf("%s tenant: labels has forced RLS %v (%v)", tn.Model, forced, err)
		}
		err = b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email, label) VALUES ($1, 'Ada', 'ada@example.test', 'vip')`, tn.ID)
			return err
		})
		if err != nil {
			t.Errorf("%s tenant: insert with the new column: %v", tn.Model, err)
		}
	}

	// Again: nothing to do, and nothing recorded twice.
	rep, err = m.Up(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Current != 6 || rep.Migrated != 0 {
		t.Errorf("second run: %+v, want 6 current", outcomes(rep))
	}
	for _, tn := range b.Tenants {
		if vs := b.versions(t, tn); vs[v(1)] != 1 || len(vs) != v(1) {
			t.Errorf("%s tenant: version table %v, want 1 to %d once each", tn.Model, vs, v(1))
		}
	}
}

// TestFailingTargetRollsBackWhole breaks the migration on one schema tenant:
// it fails and rolls back whole (not even the column added before the failing
// statement stays), the others are migrated, and a re-run after the fix
// converges with nothing applied twice.
func TestFailingTargetRollsBackWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	bad := b.tenant(tenancy.ModelSchema)
	b.exec(t, bad, `CREATE TABLE `+dataplane.Ident(bad.Placement.Schema, "labels")+` (x int)`)

	rep, err := b.migrator(t, nil).Up(ctx, nil)
	if !errors.Is(err, migrate.ErrFailed) {
		t.Fatalf("Up with a broken target: %v, want ErrFailed", err)
	}
	if rep.Failed != 1 || rep.Migrated != 5 {
		t.Fatalf("report: %+v, want 1 failed and 5 migrated", outcomes(rep))
	}
	for _, res := range rep.Results {
		if res.Target.Slug == bad.Slug && (res.Outcome != migrate.Failed || !strings.Contains(res.Error, `"labels" already exists`)) {
			t.Errorf("the broken target: %s %q", res.Outcome, res.Error)
		}
	}
	if b.hasColumn(t, bad) {
		t.Error("the failed target kept the column its migration added before failing")
	}
	if vs := b.versions(t, bad); vs[v(1)] != 0 {
		t.Errorf("the failed target recorded version %d: %v", v(1), vs)
	}

	b.exec(t, bad, `DROP TABLE `+dataplane.Ident(bad.Placement.Schema, "labels"))
	rep, err = b.migrator(t, nil).Up(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Migrated != 1 || rep.Current != 5 {
		t.Errorf("re-run: %+v, want the fixed target migrated and 5 current", outcomes(rep))
	}
	for _, tn := range b.Tenants {
		if vs := b.versions(t, tn); vs[v(1)] != 1 || !b.hasColumn(t, tn) {
			t.Errorf("%s: version table %v, column %v after the re-run", tn.Slug, vs, b.hasColumn(t, tn))
		}
	}
}

func TestFailFastAndCanary(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	bad := b.tenant(tenancy.ModelSchema)
	b.exec(t, bad, `CREATE TABLE `+dataplane.Ident(bad.Placement.Schema, "labels")+` (x int)`)
	all, err := b.migrator(t, nil).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pos := -1
	for i, st := range all {
		if st.Target.Slug == bad.Slug {
			pos = i
		}
	}

	t.Run("CanaryStopsAtItsFailure", func(t *testing.T) {
		rep, err := b.migrator(t, nil).Up(ctx, &migrate.UpOpts{Canary: pos + 1})
		if !errors.Is(err, migrate.ErrFailed) || !strings.Contains(err.Error(), "canary") {
			t.Fatalf("canary over the broken target: %v", err)
		}
		if len(rep.Results) != pos+1 || rep.Failed != 1 {
			t.Errorf("canary touched %d targets (%+v), want exactly the first %d", len(rep.Results), outcomes(rep), pos+1)
		}
		after, _ := b.migrator(t, nil).Status(ctx)
		for _, st := range after[pos+1:] {
			if st.Summary != "behind" {
				t.Errorf("%s was touched by a failed canary: %s", st.Target, st.Summary)
			}
		}
	})
	t.Run("FailFastSkipsTheRest", func(t *testing.T) {
		rep, err := b.migrator(t, &migrate.Config{Parallel: 1}).Up(ctx, &migrate.UpOpts{FailFast: true})
		if !errors.Is(err, migrate.ErrFailed) {
			t.Fatalf("fail fast: %v", err)
		}
		if rep.Failed != 1 || rep.Skipped == 0 || len(rep.Results) != 6 {
			t.Errorf("fail fast, one at a time: %+v, want 1 failed, the targets after it skipped", outcomes(rep))
		}
	})
	t.Run("GroupCanary", func(t *testing.T) {
		good := b.tenant(tenancy.ModelDatabase)
		_, err := b.migrator(t, nil).Up(ctx, &migrate.UpOpts{Group: "tenants:no-such-tenant"})
		tenanttest.WantCode(t, "group matching nothing", err, tenancy.CodeInvalid)
		_, err = b.migrator(t, nil).Up(ctx, &migrate.UpOpts{Group: "colour:blue"})
		tenanttest.WantCode(t, "unknown group kind", err, tenancy.CodeInvalid)
		rep, err := b.migrator(t, nil).Up(ctx, &migrate.UpOpts{Group: "tenants:" + good.Slug})
		if !errors.Is(err, migrate.ErrFailed) {
			t.Fatalf("group canary then the rest, with the broken target: %v", err)
		}
		if rep.Results[0].Target.Slug != good.Slug {
			t.Errorf("the canary group did not go first: %s", rep.Results[0].Target)
		}
	})
}

// TestOneMigratorAtATime: while another process holds the fleet lock, Up
// refuses with CodeConflict and touches nothing.
func TestOneMigratorAtATime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn, err := b.Platform.Catalog.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(0x74656e616e6379)); err != nil {
		t.Fatal(err)
	}
	_, err = b.migrator(t, nil).Up(ctx, nil)
	tenanttest.WantCode(t, "Up while another runs", err, tenancy.CodeConflict)
	for _, tn := range b.Tenants {
		if b.hasColumn(t, tn) {
			t.Errorf("%s was migrated without the lock", tn.Slug)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(0x74656e616e6379)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.migrator(t, nil).Up(ctx, nil); err != nil {
		t.Errorf("Up after the lock was released: %v", err)
	}
}

// TestDrift: a changed file and a target ahead of the code are reported by
// Status and refused by Up; the rest of the fleet is untouched by them.
func TestDrift(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.migrator(t, nil).Up(ctx, nil); err != nil {
		t.Fatal(err)
	}
	changed, ahead := b.tenant(tenancy.ModelSchema), b.tenant(tenancy.ModelDatabase)
	b.exec(t, changed, `UPDATE `+dataplane.Ident(changed.Placement.Schema, datamodel.VersionTable)+` SET checksum = 'edited' WHERE version = 1`)
	b.exec(t, ahead, `INSERT INTO `+dataplane.Ident(ahead.Placement.Schema, datamodel.VersionTable)+` (version, name, checksum) VALUES (99, 'future', 'x')`)
	// A model with a fourth migration, so that both are behind as well.
	m := b.migrator(t, &migrate.Config{Model: modelWith(t, map[string]string{"1_labels.sql": labels, "2_more.sql": `ALTER TABLE labels ADD COLUMN colour text;`})})

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		want := "behind"
		switch s.Target.Slug {
		case changed.Slug:
			want = "drift"
		case ahead.Slug:
			want = "ahead"
		}
		if s.Summary != want {
			t.Errorf("%s: %s %+v, want %s", s.Target, s.Summary, s.State, want)
		}
	}
	rep, err := m.Up(ctx, nil)
	if !errors.Is(err, migrate.ErrFailed) || rep.Failed != 2 || rep.Migrated != 4 {
		t.Fatalf("Up over drift: %v %+v, want the two drifted targets failed and 4 migrated", err, outcomes(rep))
	}
	for _, res := range rep.Results {
		switch res.Target.Slug {
		case changed.Slug:
			if !strings.Contains(res.Error, "changed after it was applied") {
				t.Errorf("changed file: %q", res.Error)
			}
		case ahead.Slug:
			if !strings.Contains(res.Error, "ahead") {
				t.Errorf("target ahead: %q", res.Error)
			}
		}
	}
}

// TestStaleTargetPreparedAgain: a target at the latest version that an
// older release of the library prepared — here without the audit trigger on
// contacts and with an older fence function — is reported stale and gets this
// release's functions and protection from the next Up, with no migration
// applied; so does a target whose database functions an older release's node
// replaced later. The targets that were current are left alone.
func TestStaleTargetPreparedAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	m := b.migrator(t, nil)
	if _, err := m.Up(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// One tenant database prepared by an older release; in another, an older
	// release's node has since replaced the database's functions.
	var old, replaced *tenancy.Tenant
	for _, tn := range b.Tenants {
		if tn.Model == tenancy.ModelDatabase {
			old, replaced = tn, old
		}
	}
	version := dataplane.Ident(old.Placement.Schema, datamodel.VersionTable)
	b.exec(t, old, `DROP TRIGGER tenancy_audit ON `+dataplane.Ident(old.Placement.Schema, "contacts"))
	b.exec(t, old, `COMMENT ON FUNCTION tenancy.enter(uuid, text) IS 'tenancy fence older'`)
	b.exec(t, old, `COMMENT ON TABLE `+version+` IS 'tenancy platform older'`)
	b.exec(t, replaced, `COMMENT ON FUNCTION tenancy.soft_delete() IS 'tenancy audit older'`)

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		want := "current"
		if s.Target.Slug == old.Slug || s.Target.Slug == replaced.Slug {
			want = "stale"
		}
		if s.Summary != want || s.State.Stale != (want == "stale") {
			t.Errorf("before: %s is %s %+v, want %s", s.Target, s.Summary, s.State, want)
		}
	}
	rep, err := m.Up(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Migrated != 2 || rep.Current != 4 {
		t.Fatalf("Up: %+v, want the 2 stale targets prepared again and 4 current", outcomes(rep))
	}
	for _, res := range rep.Results {
		if (res.Target.Slug == old.Slug || res.Target.Slug == replaced.Slug) && (res.Outcome != migrate.Migrated || res.Applied != 0) {
			t.Errorf("stale target: %s with %d applied, want migrated with 0", res.Outcome, res.Applied)
		}
	}

	var triggers int
	var fence string
	err = b.AdminConn(t, old).QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'tenancy_audit'),
		coalesce(obj_description('tenancy.enter(uuid, text)'::regprocedure, 'pg_proc'), '')`,
		dataplane.Ident(old.Placement.Schema, "contacts")).Scan(&triggers, &fence)
	if err != nil {
		t.Fatal(err)
	}
	if triggers != 1 || fence == "tenancy fence older" {
		t.Errorf("after Up: %d audit triggers on contacts, fence %q: want the trigger back and this release's fence", triggers, fence)
	}
	if vs := b.versions(t, old); vs[v(1)] != 1 || len(vs) != v(1) {
		t.Errorf("version table %v, want 1 to %d once each", vs, v(1))
	}
	if st, err := m.Status(ctx); err != nil || slices.ContainsFunc(st, func(s migrate.TargetStatus) bool { return s.Summary != "current" }) {
		t.Errorf("after Up: %+v %v, want every target current", st, err)
	}
}

// TestUnfinishedPurgeIsSkipped: a deleted tenant whose purge was interrupted
// after its database was dropped is not a target that fails on every run:
// it is skipped, naming the command that finishes the purge.
func TestUnfinishedPurgeIsSkipped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.tenant(tenancy.ModelDatabase)
	if _, err := b.Platform.DeleteTenant(ctx, tn.Slug); err != nil {
		t.Fatal(err)
	}
	op := &catalog.Operation{Kind: catalog.OpPurge, TenantID: tn.ID, TenantSlug: tn.Slug}
	if err := b.Platform.Catalog.Tx(ctx, func(tx pgx.Tx) error { return catalog.StartOperationTx(ctx, tx, op) }); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, b.Server(tn.Placement.Server).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+dataplane.Ident(tn.Placement.Database)+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}

	rep, err := b.migrator(t, nil).Up(ctx, nil)
	if err != nil {
		t.Fatalf("Up: %v %+v", err, outcomes(rep))
	}
	for _, res := range rep.Results {
		if res.Target.Slug == tn.Slug && (res.Outcome != migrate.Skipped || !strings.Contains(res.Reason, "tenants purge "+tn.Slug)) {
			t.Errorf("the tenant being purged: %s (%q), want skipped naming the purge", res.Outcome, res.Reason)
		}
	}
	if rep.Skipped != 1 || rep.Migrated != 5 {
		t.Errorf("Up: %+v, want the purged tenant skipped and 5 migrated", outcomes(rep))
	}
}

// TestBounds: the per-server and overall bounds hold.
func TestBounds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rep, err := b.migrator(t, &migrate.Config{Parallel: 2, PerServer: 1}).Up(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PeakPerServer > 1 || rep.Peak > 2 {
		t.Errorf("peaks: %d per server, %d overall; bounds 1 and 2", rep.PeakPerServer, rep.Peak)
	}
	if rep.Peak < 2 {
		t.Logf("peak overall %d: the two servers never overlapped in this run", rep.Peak)
	}
}

// TestTenantCreatedDuringRun: a node still running the old model creates a
// tenant while Up runs; Up looks again and brings it to the latest version.
func TestTenantCreatedDuringRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var once sync.Once
	var late *tenancy.Tenant
	rep, err := b.migrator(t, &migrate.Config{Parallel: 1}).Up(ctx, &migrate.UpOpts{Progress: func(migrate.Result) {
		once.Do(func() { late = b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0]) })
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Migrated != 7 {
		t.Errorf("migrated %d targets (%+v), want the 6 and the late tenant", rep.Migrated, outcomes(rep))
	}
	if vs := b.versions(t, late); vs[v(1)] != 1 {
		t.Errorf("the tenant created during the run has versions %v, want %d", vs, v(1))
	}
}
