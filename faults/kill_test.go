package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// bundle is one installation: a catalog on the test server, one data server
// in it, and the binary built from this tree.
type bundle struct {
	bin        string
	server     *pgtest.Server
	catalogURL string
	rng        *rand.Rand
	slugs      []string         // tenants to clean up
	others     []*pgtest.Server // further data servers, cleaned up too
}

func setup(t *testing.T) *bundle {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tenancy")
	build := exec.Command("go", "build", "-o", bin, "github.com/tenancyhq/tenancy/cmd/tenancy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the binary: %v\n%s", err, out)
	}
	s := pgtest.DefaultServer(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	b := &bundle{bin: bin, server: s, catalogURL: s.URL(s.NewDatabase(t, "")), rng: rand.New(rand.NewPCG(seed, 1))}
	t.Cleanup(func() { b.dropClusterObjects(t) })
	b.mustRun(t, "servers", "add", "pg1", "--dsn", s.URL(s.NewDatabase(t, "")))
	return b
}

// command returns the binary running args against the bundle's catalog.
func (b *bundle) command(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Env = append(os.Environ(), "TENANCY_DATABASE_URL="+b.catalogURL, "TENANCY_OPERATOR=faults")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

// run runs the binary to its end and returns its output and error.
func (b *bundle) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, out := b.command(ctx, args...)
	err := cmd.Run()
	return out.String(), err
}

func (b *bundle) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := b.run(t, args...)
	if err != nil {
		t.Fatalf("tenancy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runAndKill starts the binary and kills it with SIGKILL after a random
// delay in [lo, hi), counted from the start, or, when started is not nil,
// from the moment started first reports true (polled every 2ms): the
// operation has begun. It reports whether the kill came before the process
// ended by itself. A run that ends by itself with an error, or before its
// operation is seen to start, fails the test.
func (b *bundle) runAndKill(t *testing.T, started func() bool, lo, hi time.Duration, args ...string) (killed bool, after time.Duration) {
	t.Helper()
	r := b.killAt(t, started, lo, hi, args...)
	if r.unseen {
		t.Fatalf("tenancy %s ended (%v) before its operation was seen to start\n%s", strings.Join(args, " "), r.err, r.out)
	}
	if r.err != nil {
		t.Fatalf("tenancy %s failed before the kill: %v\n%s", strings.Join(args, " "), r.err, r.out)
	}
	return r.killed, r.after
}

// killRun is how a run that killAt started ended.
type killRun struct {
	killed bool          // by the kill
	after  time.Duration // the kill's delay
	unseen bool          // it ended before started reported true
	out    string        // its output
	err    error         // its error, when it ended by itself
}

// killAt is runAndKill that returns how the run ended instead of failing
// the test.
func (b *bundle) killAt(t *testing.T, started func() bool, lo, hi time.Duration, args ...string) killRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, out := b.command(ctx, args...)
	// A window measured on a loaded machine may come out empty (hi ≤ lo):
	// kill at lo then, rather than panic.
	delay := lo + time.Duration(b.rng.Int64N(int64(max(hi-lo, time.Millisecond))))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for started != nil && !started() {
		select {
		case err := <-done:
			return killRun{unseen: true, out: out.String(), err: err}
		case <-time.After(2 * time.Millisecond):
		}
	}
	select {
	case err := <-done:
		return killRun{after: delay, out: out.String(), err: err}
	case <-time.After(delay):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	err := <-done
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return killRun{killed: true, after: delay, out: out.String()}
		}
	}
	// It ended by itself just before the signal.
	return killRun{after: delay, out: out.String(), err: err}
}

// converge runs args again until it succeeds, at most three times: each run
// continues or rolls back what the killed one left. A run whose output
// contains done (when not empty) counts as a success too: it says there is
// nothing left to do.
func (b *bundle) converge(t *testing.T, done string, args ...string) string {
	t.Helper()
	var out string
	var err error
	for range 3 {
		if out, err = b.run(t, args...); err == nil || (done != "" && strings.Contains(out, done)) {
			return out
		}
		t.Logf("re-run of tenancy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Fatalf("tenancy %s did not converge: %v\n%s", strings.Join(args, " "), err, out)
	return ""
}

// timed runs args to completion and returns how long it took.
func (b *bundle) timed(t *testing.T, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	b.mustRun(t, args...)
	return time.Since(start)
}

func (b *bundle) tenant(t *testing.T, slug string) *tenancy.Tenant {
	t.Helper()
	var tn tenancy.Tenant
	out := b.mustRun(t, "tenants", "show", slug, "--json")
	var list []tenancy.Tenant
	if err := json.Unmarshal([]byte(out), &list); err == nil && len(list) == 1 {
		return &list[0]
	}
	if err := json.Unmarshal([]byte(out), &tn); err != nil {
		t.Fatalf("tenants show %s --json: %v\n%s", slug, err, out)
	}
	return &tn
}

func (b *bundle) admin(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	return adminOn(t, b.server, db)
}

// adminOn connects to database db of server s as its superuser, until the
// test ends.
func adminOn(t *testing.T, s *pgtest.Server, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// catalogCheck checks that the catalog holds exactly one tenant with slug,
// active, and no unfinished operation or move for it.
func (b *bundle) catalogCheck(t *testing.T, slug string) *tenancy.Tenant {
	t.Helper()
	ctx := context.Background()
	conn := b.admin(t, strings.TrimPrefix(mustPath(t, b.catalogURL), "/"))
	var n, open, moving int
	var status string
	err := conn.QueryRow(ctx, `SELECT count(*), min(status),
		(SELECT count(*) FROM catalog.operations WHERE tenant_slug = $1 AND state IN ('running', 'failed')),
		(SELECT count(*) FROM catalog.moves m JOIN catalog.tenants t ON t.id = m.tenant_id
		  WHERE t.slug = $1 AND m.state NOT IN ('done', 'rolled_back'))
		FROM catalog.tenants WHERE slug = $1`, slug).Scan(&n, &status, &open, &moving)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || status != string(tenancy.StatusActive) || open != 0 || moving != 0 {
		t.Fatalf("catalog: %d tenants %q in status %q, %d unfinished operations, %d unfinished moves; want one active, none unfinished",
			n, slug, status, open, moving)
	}
	return b.tenant(t, slug)
}

// storage lists the databases and schemas on the server named for slug.
func (b *bundle) storage(t *testing.T, dataDB, slug string) (dbs, schemas []string) {
	t.Helper()
	return storageOn(t, b.server, dataDB, slug)
}

// storageOn lists the databases of server s, and the schemas of its database
// dataDB, named for slug.
func storageOn(t *testing.T, s *pgtest.Server, dataDB, slug string) (dbs, schemas []string) {
	t.Helper()
	ctx := context.Background()
	name := "tenant_" + strings.ReplaceAll(slug, "-", "_")
	rows, err := adminOn(t, s, "postgres").Query(ctx, `SELECT datname FROM pg_database WHERE datname = $1`, name)
	if err != nil {
		t.Fatal(err)
	}
	dbs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rows, err = adminOn(t, s, dataDB).Query(ctx, `SELECT nspname FROM pg_namespace WHERE nspname = $1`, name)
	if err != nil {
		t.Fatal(err)
	}
	schemas, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return dbs, schemas
}

func mustPath(t *testing.T, raw string) string {
	t.Helper()
	i := strings.LastIndex(raw, "/")
	j := strings.IndexByte(raw[i:], '?')
	if j < 0 {
		return raw[i:]
	}
	return raw[i : i+j]
}

// dropClusterObjects drops what outlives the test's databases: the tenants'
// databases and roles, on every data server.
func (b *bundle) dropClusterObjects(t *testing.T) {
	ctx := context.Background()
	cat, err := pgx.Connect(ctx, b.catalogURL)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer cat.Close(ctx)
	for _, s := range append([]*pgtest.Server{b.server}, b.others...) {
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err != nil {
			t.Logf("cleanup: %v", err)
			continue
		}
		for _, slug := range b.slugs {
			_ = dataplane.DropDatabase(ctx, conn, "tenant_"+strings.ReplaceAll(slug, "-", "_"))
			var id tenancy.Tenant
			if err := cat.QueryRow(ctx, `SELECT id FROM catalog.tenants WHERE slug = $1`, slug).Scan(&id.ID); err == nil {
				_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+dataplane.Ident(id.Role()))
			}
		}
		conn.Close(ctx)
	}
}

// TestKillCreate kills "tenants create --model database" at a random moment
// within a typical provisioning's duration after the tenant's row appears in
// the catalog, then runs the same command again: the tenant is active exactly once, with exactly
// its one database, and no schema or other leftover.
func TestKillCreate(t *testing.T) { killCreate(t, tenancy.ModelDatabase) }

// killCreate is TestKillCreate for a tenant of the model: the tenant ends
// with exactly its one database (database model) or its one schema (schema
// model), its role, and nothing else.
func killCreate(t *testing.T, model tenancy.Model) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	op := b.timeCreate(t, model)
	var killed int
	w := window(op)
	n := 0
	for i := 0; moreRuns(i, 4, killed); i++ {
		n++
		slug := pgtest.UniqueName("kc")
		b.slugs = append(b.slugs, slug)
		args := []string{"tenants", "create", slug, "--model", string(model)}
		k, after := b.runAndKill(t, b.created(t, slug), 0, w, args...)
		if k {
			killed++
		}
		w = aim(w, k, after)
		b.converge(t, alreadyCreated(slug), args...)
		b.checkCreated(t, dataDB, slug, model)
		t.Logf("run %d: killed %v after %v; converged", i, k, after)
	}
	t.Logf("%d of %d runs killed mid-way", killed, n)
	if killed == 0 {
		t.Error("no run was killed before it ended")
	}
}

// timeCreate creates a reference tenant of the model and returns how long
// its provisioning's operation took. The first database tenant of a server
// also builds its template: the second is timed.
func (b *bundle) timeCreate(t *testing.T, model tenancy.Model) time.Duration {
	t.Helper()
	var full, op time.Duration
	for range 2 {
		ref := pgtest.UniqueName("kc")
		b.slugs = append(b.slugs, ref)
		full = b.timed(t, "tenants", "create", ref, "--model", string(model))
		op = b.duration(t, `SELECT finished_at - started_at FROM catalog.operations WHERE tenant_slug = $1 AND kind = 'provision'`, ref)
	}
	t.Logf("a %s tenant created in %v, %v of it recorded as its provisioning", model, full, op)
	return op
}

// created returns a function that reports whether the tenant's row is in
// the catalog: its provisioning has begun.
func (b *bundle) created(t *testing.T, slug string) func() bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM catalog.tenants WHERE slug = $1)`, slug)
}

// alreadyCreated is what a re-run of "tenants create" says when a killed run
// had finished: there is nothing left to do.
func alreadyCreated(slug string) string { return fmt.Sprintf("tenant %q already exists", slug) }

// checkCreated checks a finished creation: the tenant is active once in the
// catalog, in the model, with exactly its storage, and served.
func (b *bundle) checkCreated(t *testing.T, dataDB, slug string, model tenancy.Model) {
	t.Helper()
	tn := b.catalogCheck(t, slug)
	if tn.Model != model {
		t.Fatalf("tenant %+v, want the %s model", tn, model)
	}
	b.checkStorage(t, b.server, dataDB, tn)
	b.checkServed(t, slug, 0)
}

// exists returns a function that reports whether query, run on the catalog
// with slug, returns true.
func (b *bundle) exists(t *testing.T, query, slug string) func() bool {
	conn := b.admin(t, strings.TrimPrefix(mustPath(t, b.catalogURL), "/"))
	return func() bool {
		var ok bool
		if err := conn.QueryRow(context.Background(), query, slug).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
}

// dataDBOf returns the name of the data server's shared database.
func dataDBOf(t *testing.T, b *bundle) string {
	t.Helper()
	var dsn string
	conn := b.admin(t, strings.TrimPrefix(mustPath(t, b.catalogURL), "/"))
	if err := conn.QueryRow(context.Background(), `SELECT dsn FROM catalog.servers WHERE name = 'pg1'`).Scan(&dsn); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(mustPath(t, dsn), "/")
}

// openPlatform opens a platform on the bundle's catalog in this process.
func (b *bundle) openPlatform(t *testing.T) *platform.Platform {
	t.Helper()
	p, err := platform.Open(context.Background(), platform.Config{CatalogURL: b.catalogURL, DataModel: crm.Migrations()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// checkServed checks that the tenant is served and has want contacts.
func (b *bundle) checkServed(t *testing.T, slug string, want int) {
	t.Helper()
	checkServedBy(t, b.openPlatform(t), slug, want)
}

// checkServedBy checks that platform p serves the tenant, which has want
// contacts.
func checkServedBy(t *testing.T, p *platform.Platform, slug string, want int) {
	t.Helper()
	ctx, err := p.TenantContext(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = p.Router.Tx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&n)
	})
	if err != nil || n != want {
		t.Fatalf("tenant %s: %d contacts, %v; want %d", slug, n, err, want)
	}
}

// addContacts inserts n contacts for the tenant, through the router.
func (b *bundle) addContacts(t *testing.T, slug string, n int) {
	t.Helper()
	tn := b.tenant(t, slug)
	p := b.openPlatform(t)
	ctx, err := p.TenantContext(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Router.Tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email)
			SELECT $1, 'c' || i, 'c' || i || '@example.com' FROM generate_series(1, $2) i`, tn.ID, n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKillMigrate kills "migrate up" over seven targets (shared tables, three
// schemas, three databases) at a random moment, four times, each time with a new
// migration that fails if applied twice (ADD COLUMN), then runs it again:
// every target ends with the migration applied once.
func TestKillMigrate(t *testing.T) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	f := b.newFleet(t, "km")
	startup := b.timed(t, f.args()...)
	var killed int
	for i := range 4 {
		column, _ := f.addMark(t, i)
		args := f.args()
		k, after := b.runAndKill(t, nil, startup/2, 2*startup, args...)
		if k {
			killed++
		}
		out := b.converge(t, "", args...)
		var rep struct{ Migrated, Current, Failed, Skipped int }
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); err != nil {
			t.Fatalf("migrate up --json: %v\n%s", err, out)
		}
		// Targets: the shared tables, three schemas, three databases.
		if rep.Failed != 0 || rep.Skipped != 0 || rep.Migrated+rep.Current != len(f.slugs) {
			t.Fatalf("run %d (killed %v after %v): re-run report %+v", i, k, after, rep)
		}
		b.checkMarked(t, dataDB, f, column)
		t.Logf("run %d: killed %v after %v; re-run %+v", i, k, after, rep)
	}
	t.Logf("%d of 4 runs killed mid-way", killed)
}

// fleet is the tenants of a test of "migrate up", one a target, and the
// directory of its migrations.
type fleet struct {
	slugs []string
	dir   string
}

// newFleet creates seven tenants (their slugs made from prefix), each a
// target of "migrate up": the shared tables, three schemas, three databases;
// and a directory with the example's migrations.
func (b *bundle) newFleet(t *testing.T, prefix string) *fleet {
	t.Helper()
	f := &fleet{dir: t.TempDir()}
	for _, model := range []string{"shared", "schema", "schema", "schema", "database", "database", "database"} {
		slug := pgtest.UniqueName(prefix)
		b.slugs = append(b.slugs, slug)
		f.slugs = append(f.slugs, slug)
		b.mustRun(t, "tenants", "create", slug, "--model", model)
	}
	if err := os.CopyFS(f.dir, crm.Migrations()); err != nil {
		t.Fatal(err)
	}
	return f
}

// args is the command that migrates the fleet, two targets at once.
func (f *fleet) args() []string {
	return []string{"migrate", "up", "--migrations", f.dir, "--parallel", "2", "--json"}
}

// addMark adds to the fleet's migrations the next version, which fails if
// applied twice: it adds the column kill_mark_i to contacts and deals. It
// returns the column and the version.
func (f *fleet) addMark(t *testing.T, i int) (column string, version int) {
	t.Helper()
	entries, err := fs.Glob(os.DirFS(f.dir), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	column, version = fmt.Sprintf("kill_mark_%d", i), len(entries)+1
	name := fmt.Sprintf("%03d_%s.sql", version, column)
	sql := fmt.Sprintf("ALTER TABLE contacts ADD COLUMN %s int;\nALTER TABLE deals ADD COLUMN %s int;\n", column, column)
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(sql), 0o644); err != nil {
		t.Fatal(err)
	}
	return column, version
}

// checkMarked checks that every tenant of the fleet is active and has the
// column on both tables.
func (b *bundle) checkMarked(t *testing.T, dataDB string, f *fleet, column string) {
	t.Helper()
	for _, slug := range f.slugs {
		tn := b.catalogCheck(t, slug)
		db := tn.Placement.Database
		if tn.Model == tenancy.ModelShared {
			db = dataDB
		}
		var n int
		err := b.admin(t, db).QueryRow(context.Background(), `SELECT count(*) FROM information_schema.columns
			WHERE table_schema = $1 AND table_name IN ('contacts', 'deals') AND column_name = $2`, tn.Placement.Schema, column).Scan(&n)
		if err != nil || n != 2 {
			t.Fatalf("tenant %s (%s): %d of 2 columns %s: %v", slug, tn.Model, n, column, err)
		}
	}
}

// TestKillMove kills "tenants move" at a random moment while a tenant with
// rows moves from the shared tables to its own database (and back), then runs
// the same command again: the tenant is active at exactly one placement, with
// every row, and nothing of it is left at the other.
func TestKillMove(t *testing.T) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	const rows = 500
	cycle := []dest{{model: tenancy.ModelDatabase}, {model: tenancy.ModelShared}}
	slug, w := b.movable(t, "kmv", rows, cycle)
	var killed int
	n := 0
	for i := 0; moreRuns(i, 4, killed); i++ {
		n++
		to := cycle[i%2]
		args := to.args(slug)
		k, after := b.runAndKill(t, b.moving(t, slug), 0, w, args...)
		if k {
			killed++
		}
		w = aim(w, k, after)
		// A kill after the move finished leaves nothing to do; the checks
		// below find anything left unfinished.
		b.converge(t, to.already(), args...)
		b.checkMoved(t, dataDB, slug, to.model, rows)
		t.Logf("run %d: killed %v after %v; converged at %s", i, k, after, to)
	}
	t.Logf("%d of %d runs killed mid-way", killed, n)
	if killed == 0 {
		t.Error("no run was killed before it ended")
	}
}

// moving returns a function that reports whether the tenant has an
// unfinished move: a move has begun.
func (b *bundle) moving(t *testing.T, slug string) func() bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM catalog.moves m JOIN catalog.tenants t ON t.id = m.tenant_id
		WHERE t.slug = $1 AND m.state NOT IN ('done', 'rolled_back'))`, slug)
}

// dest is the destination of a move: a model, on a server or, when server
// is empty, on the tenant's.
type dest struct {
	model  tenancy.Model
	server string
}

func (d dest) String() string {
	if d.server == "" {
		return string(d.model)
	}
	return fmt.Sprintf("%s on %s", d.model, d.server)
}

// args is the command that moves the tenant slug to d.
func (d dest) args(slug string) []string {
	args := []string{"tenants", "move", slug, "--to", string(d.model)}
	if d.server != "" {
		args = append(args, "--server", d.server)
	}
	return args
}

// already is what a re-run of a move to d says when a killed run had
// finished it.
func (d dest) already() string {
	if d.server == "" {
		return fmt.Sprintf("is already a %s tenant", d.model)
	}
	return fmt.Sprintf("is already a %s tenant on server %q", d.model, d.server)
}

// checkMoved checks a finished move to the model on the bundle's server: the
// catalog names one placement, with no unfinished move; the tenant is active
// there in that model, with exactly its storage (none but its rows in the
// shared model), all its rows served, none left in the shared tables after a
// move out of them.
func (b *bundle) checkMoved(t *testing.T, dataDB, slug string, to tenancy.Model, rows int) {
	t.Helper()
	tn := b.catalogCheck(t, slug)
	if tn.Model != to {
		t.Fatalf("tenant in the %s model, want %s", tn.Model, to)
	}
	dbs, schemas := b.storage(t, dataDB, slug)
	var shared int
	if err := b.admin(t, dataDB).QueryRow(context.Background(), `SELECT count(*) FROM `+provision.SharedSchema+`.contacts WHERE tenant_id = $1`, tn.ID).Scan(&shared); err != nil {
		t.Fatal(err)
	}
	if to == tenancy.ModelShared {
		if len(dbs) != 0 || len(schemas) != 0 || shared != rows {
			t.Fatalf("moved to the shared tables: databases %v, schemas %v, %d of %d rows in the shared tables", dbs, schemas, shared, rows)
		}
	} else {
		b.checkStorage(t, b.server, dataDB, tn)
		if shared != 0 {
			t.Fatalf("moved to its %s: %d rows left in the shared tables", to, shared)
		}
	}
	b.checkServed(t, slug, rows)
}

// movable creates a shared tenant (its slug made from prefix) with rows
// contacts and moves it to each destination of cycle in turn (see
// timeMoves), which ends in the shared model. It returns the slug and the
// kill window of a move.
func (b *bundle) movable(t *testing.T, prefix string, rows int, cycle []dest) (slug string, w time.Duration) {
	t.Helper()
	slug = pgtest.UniqueName(prefix)
	b.slugs = append(b.slugs, slug)
	b.mustRun(t, "tenants", "create", slug, "--model", "shared")
	b.addContacts(t, slug, rows)
	return slug, b.timeMoves(t, slug, rows, cycle)
}

// timeMoves moves the tenant slug, which has rows contacts, to each
// destination of cycle in turn and returns a kill window for such a move,
// counted from its start in the catalog: the moves' mean duration less the
// process's start-up.
func (b *bundle) timeMoves(t *testing.T, slug string, rows int, cycle []dest) time.Duration {
	t.Helper()
	startup := b.timed(t, "tenants", "list")
	var full time.Duration
	for _, to := range cycle {
		full += b.timed(t, to.args(slug)...)
	}
	full /= time.Duration(len(cycle))
	t.Logf("process start-up %v, a move of %d rows in %v", startup, rows, full)
	return full - startup
}
