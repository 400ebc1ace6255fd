package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// The tests here kill the re-run too: an operator's recovery is itself
// interrupted (a deploy restarts the pod while it runs the command again).
// Each round kills a first run as the tests of kill_test.go do, then kills
// one or two re-runs in turn, each at a random moment after it took the
// tenant's lock, and only then lets a last run finish; the checks are those
// of the single-kill tests.

// TestKillRerunCreate kills "tenants create" (schema and database model),
// then its re-runs, one or two of them: the last run leaves the tenant
// active exactly once, with exactly its schema or database and its role, no
// unfinished operation, served, and the tenant's and the control plane's
// logs verify.
func TestKillRerunCreate(t *testing.T) {
	rekillEachModel(t, []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase}, (*bundle).timeCreate, func(b *bundle, t *testing.T, dataDB string, model tenancy.Model) (rekill, func()) {
		slug := pgtest.UniqueName("krc")
		b.slugs = append(b.slugs, slug)
		r := rekill{
			args:    []string{"tenants", "create", slug, "--model", string(model)},
			started: b.created(t, slug),
			held:    b.locked(t, tenantLock, slug),
			done:    alreadyCreated(slug),
		}
		return r, func() {
			b.checkCreated(t, dataDB, slug, model)
			b.checkAudit(t, slug)
		}
	})
}

// TestKillRerunPurge kills "tenants purge" of a deleted tenant (schema and
// database model), then its re-runs, one or two of them. After every kill
// the tenant is deleted or purged (purged only without its storage), not
// served, and cannot be restored; the last run leaves one tombstone, one
// purged event, no unfinished operation, nothing of the tenant on the
// server, and the control plane's log verifies.
func TestKillRerunPurge(t *testing.T) {
	rekillEachModel(t, []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase}, (*bundle).timePurge, (*bundle).rekillPurge)
}

// TestKillRerunPurgeShared is TestKillRerunPurge for a shared tenant with
// sharedPurgeRows contacts, which its purge deletes from the shared tables
// in one transaction: after every kill its contacts and audit entries are
// all there or all gone, never some; the last run leaves none of them.
func TestKillRerunPurgeShared(t *testing.T) {
	rekillEachModel(t, []tenancy.Model{tenancy.ModelShared}, (*bundle).timePurge, (*bundle).rekillPurge)
}

// rekillPurge is a round that purges a new deleted tenant of the model.
func (b *bundle) rekillPurge(t *testing.T, dataDB string, model tenancy.Model) (rekill, func()) {
	tn := b.deleted(t, model)
	r := rekill{
		args:    purgeArgs(tn.Slug),
		started: b.purgeStarted(t, tn.Slug),
		held:    b.locked(t, tenantLock, tn.Slug),
		done:    alreadyPurged(tn.Slug),
		half:    func() string { return b.checkHalfPurged(t, dataDB, tn) },
	}
	return r, func() {
		b.checkPurged(t, dataDB, tn)
		b.mustRun(t, "audit", "verify", "--control")
	}
}

// rekillEachModel makes two rounds of rekillRounds for each of the models,
// in subtests of one bundle: next returns each round's command and check;
// the kill windows come from the duration of a reference operation, which
// timeOp measures.
func rekillEachModel(t *testing.T, models []tenancy.Model, timeOp func(*bundle, *testing.T, tenancy.Model) time.Duration,
	next func(b *bundle, t *testing.T, dataDB string, model tenancy.Model) (rekill, func())) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	for _, model := range models {
		t.Run(string(model), func(t *testing.T) {
			w := window(timeOp(b, t, model))
			b.rekillRounds(t, 2, windows{w, w}, func(int) (rekill, func()) { return next(b, t, dataDB, model) })
		})
	}
}

// TestKillRerunMove kills "tenants move" of a tenant with 500 rows, from
// the shared tables to its own database, then to a schema, then back to the
// shared tables (each a change of model), then kills the re-runs, which roll
// the move back and start it again, or finish it, one or two of them. After
// every kill the catalog names one placement, which holds every row, and at
// most one end of the move accepts the tenant; the last run leaves it active
// in the model asked for, with every row served, exactly its storage, no
// unfinished move, and the tenant's and the control plane's logs verify.
func TestKillRerunMove(t *testing.T) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	const rows = 500
	cycle := []dest{{model: tenancy.ModelDatabase}, {model: tenancy.ModelSchema}, {model: tenancy.ModelShared}}
	slug, w := b.movable(t, "krm", rows, cycle)
	servers := map[string]*pgtest.Server{"pg1": b.server}
	b.rekillRounds(t, len(cycle), windows{w, w}, func(i int) (rekill, func()) {
		to := cycle[i%len(cycle)]
		return b.rekillMove(t, servers, slug, to, rows), func() {
			b.checkMoved(t, dataDB, slug, to.model, rows)
			b.checkAudit(t, slug)
		}
	})
}

// TestKillRerunMoveAcrossServers is TestKillRerunMove for a tenant that
// moves between two PostgreSQL servers and models: from its database on pg1
// to a schema on pg2 and back. The last run leaves it active at the
// destination with every row served, exactly its storage there, and none of
// it on the other server.
func TestKillRerunMoveAcrossServers(t *testing.T) {
	b := setup(t)
	servers, dataDBs := b.twoServers(t)
	const rows = 500
	slug := b.movableAcross(t, "krx", rows)
	cycle := []dest{{tenancy.ModelSchema, "pg2"}, {tenancy.ModelDatabase, "pg1"}}
	w := b.timeMoves(t, slug, rows, cycle)
	b.rekillRounds(t, len(cycle), windows{w, w}, func(i int) (rekill, func()) {
		to := cycle[i%len(cycle)]
		return b.rekillMove(t, servers, slug, to, rows), func() {
			b.checkMovedAcross(t, servers, dataDBs, slug, to, rows)
			b.checkAudit(t, slug)
		}
	})
}

// TestKillRerunMigrate kills "migrate up" over the seven targets of
// TestKillMigrate (the shared tables, three schemas, three databases), each
// round with a new migration that fails if applied twice, then kills its
// re-runs, one or two of them, each at a random moment after it took the
// fleet's lock. After every kill each target is at the version before the
// round's migration, without its columns, or at the new one, with them: a
// target migrates in one transaction. The last run leaves every target at
// the latest version with the columns once and every checksum recorded
// ("migrate status": all current, no drift), the fleet's lock free, every
// tenant active and served.
func TestKillRerunMigrate(t *testing.T) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	f := b.newFleet(t, "krg")
	targets := b.fleetTargets(t, dataDB, f)
	held := b.migrating(t)
	startup := b.timed(t, "tenants", "list")
	_, _ = f.addMark(t, 0)
	full := b.timed(t, f.args()...)
	t.Logf("process start-up %v, a migration of %d targets in %v", startup, len(targets), full)
	w := window(full - startup)
	b.rekillRounds(t, 2, windows{w, w}, func(i int) (rekill, func()) {
		column, version := f.addMark(t, i+1)
		r := rekill{
			args:    f.args(),
			started: held,
			held:    held,
			half:    func() string { return checkHalfMigrated(t, targets, column, version) },
		}
		return r, func() {
			b.checkMarked(t, dataDB, f, column)
			b.checkMigrated(t, f, version)
		}
	})
}

// fleetLock is the advisory lock on the catalog that a run of "migrate up"
// holds (package migrate's).
const fleetLock int64 = 0x74656e616e6379

// migrating returns a function that reports whether a run of "migrate up"
// holds the fleet's lock, from a session other than the last it saw: a
// killed run's session may hold it a moment longer, and must not be taken
// for its re-run's.
func (b *bundle) migrating(t *testing.T) func() bool {
	var last uint32
	return func() bool {
		pid := b.fleetHolder(t)
		if pid == 0 || pid == last {
			return false
		}
		last = pid
		return true
	}
}

// fleetHolder is the process id of the catalog's session that holds the
// fleet's lock, 0 when none does.
func (b *bundle) fleetHolder(t *testing.T) uint32 {
	t.Helper()
	var pid uint32
	err := b.catalog(t).QueryRow(context.Background(), `SELECT coalesce((SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid), 0)`, fleetLock).Scan(&pid)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// migrationTarget is where a tenant of a fleet is migrated, and a
// connection to its database.
type migrationTarget struct {
	slug, schema string
	conn         *pgx.Conn
}

// fleetTargets returns the targets of the fleet's tenants, with one
// connection to each database.
func (b *bundle) fleetTargets(t *testing.T, dataDB string, f *fleet) []migrationTarget {
	t.Helper()
	conns := map[string]*pgx.Conn{}
	var targets []migrationTarget
	for _, slug := range f.slugs {
		tn := b.tenant(t, slug)
		db := tn.Placement.Database
		if tn.Model == tenancy.ModelShared {
			db = dataDB
		}
		if conns[db] == nil {
			conns[db] = b.admin(t, db)
		}
		targets = append(targets, migrationTarget{slug: slug, schema: tn.Placement.Schema, conn: conns[db]})
	}
	return targets
}

// checkHalfMigrated checks the targets after a killed run of "migrate up"
// that applies version, which adds column to contacts and deals: each is at
// the version before, without the column, or at version, with it on both
// tables. It returns how many are at version.
func checkHalfMigrated(t *testing.T, targets []migrationTarget, column string, version int) string {
	t.Helper()
	migrated := 0
	for _, tg := range targets {
		var at, columns int
		err := tg.conn.QueryRow(context.Background(), `SELECT (SELECT max(version) FROM `+pgx.Identifier{tg.schema, datamodel.VersionTable}.Sanitize()+`),
			(SELECT count(*) FROM information_schema.columns
			  WHERE table_schema = $1 AND table_name IN ('contacts', 'deals') AND column_name = $2)`, tg.schema, column).Scan(&at, &columns)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case at == version && columns == 2:
			migrated++
		case at == version-1 && columns == 0:
		default:
			t.Fatalf("a killed migration left tenant %s at version %d with %d of 2 columns %s; want version %d without them or %d with both",
				tg.slug, at, columns, column, version-1, version)
		}
	}
	return fmt.Sprintf("%d of %d targets migrated", migrated, len(targets))
}

// checkMigrated checks a fleet after a finished "migrate up" to version:
// "migrate status" finds every target current (at version, every
// migration's checksum recorded, no drift), no session holds the fleet's
// lock, and every tenant is served.
func (b *bundle) checkMigrated(t *testing.T, f *fleet, version int) {
	t.Helper()
	out := b.mustRun(t, "migrate", "status", "--migrations", f.dir, "--json")
	var st struct {
		Latest  int
		Targets []struct {
			Target  struct{ Schema string }
			State   datamodel.State
			Summary string
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("migrate status --json: %v\n%s", err, out)
	}
	if st.Latest != version || len(st.Targets) != len(f.slugs) {
		t.Fatalf("migrate status: latest %d, %d targets; want %d and %d\n%s", st.Latest, len(st.Targets), version, len(f.slugs), out)
	}
	for _, tg := range st.Targets {
		if tg.Summary != "current" || tg.State.Version != version || len(tg.State.Drift) != 0 {
			t.Fatalf("migrate status: target %s %s at version %d (drift %v); want current at %d\n%s",
				tg.Target.Schema, tg.Summary, tg.State.Version, tg.State.Drift, version, out)
		}
	}
	if pid := b.fleetHolder(t); pid != 0 {
		t.Fatalf("session %d holds the fleet's lock after the last run", pid)
	}
	p := b.openPlatform(t)
	for _, slug := range f.slugs {
		checkServedBy(t, p, slug, 0)
	}
}

// rekillMove is a round that moves the tenant slug, which has rows
// contacts, to to, among servers.
func (b *bundle) rekillMove(t *testing.T, servers map[string]*pgtest.Server, slug string, to dest, rows int) rekill {
	return rekill{
		args:    to.args(slug),
		started: b.moving(t, slug),
		held:    b.locked(t, moveLock, slug),
		done:    to.already(),
		half:    func() string { return b.checkHalfMoved(t, servers, slug, rows) },
	}
}

// rekill is one round of a test that kills re-runs.
type rekill struct {
	args    []string      // the command
	started func() bool   // whether the first run's operation has begun
	held    func() bool   // whether a run holds the tenant's lock: its work has begun
	done    string        // what a run says when there is nothing left to do, if anything
	half    func() string // when not nil, checks what a kill left and describes it
}

// windows are the kill windows of a test's rounds: for the first run, after
// its operation began, and for the re-runs, after they took the tenant's
// lock.
type windows struct{ first, again time.Duration }

// rekillRounds makes the rounds of a test that kills re-runs: round i (from
// 0) runs the command that next(i) returns, killed as killRuns does, then
// runs it until it converges and checks the result with the function next
// returned. It makes planned rounds, and more (see moreRuns) while no round
// has had a re-run killed; it fails if none had.
func (b *bundle) rekillRounds(t *testing.T, planned int, w windows, next func(i int) (rekill, func())) {
	t.Helper()
	var twice, n int
	for i := 0; moreRuns(i, planned, twice); i++ {
		n++
		r, check := next(i)
		// The first run, and one or two re-runs.
		kills, what := b.killRuns(t, r, &w, 2+b.rng.IntN(2))
		if kills > 1 {
			twice++
		}
		t.Logf("round %d: %d runs killed (%s); a last run", i, kills, strings.Join(what, "; "))
		b.converge(t, r.done, r.args...)
		check()
	}
	t.Logf("%d of %d rounds had a re-run killed", twice, n)
	if twice == 0 {
		t.Error("no re-run was killed before it ended")
	}
}

// killRuns runs r.args and kills it at a random moment within w.first after
// r.started reports true; then, while the runs are killed or fail, runs it
// again, up to most runs in all, each killed at a random moment within
// w.again after r.held reports true. r.half checks what each kill left. It
// returns how many runs were killed and what each run did, and aims each
// window at what it saw (see aim).
func (b *bundle) killRuns(t *testing.T, r rekill, w *windows, most int) (kills int, what []string) {
	t.Helper()
	k, after := b.runAndKill(t, r.started, 0, w.first, r.args...)
	w.first = aim(w.first, k, after)
	if !k {
		return 0, []string{fmt.Sprintf("the first run ended before its kill at %v", after)}
	}
	killed := func(after time.Duration) {
		kills++
		what = append(what, fmt.Sprintf("killed after %v", after))
		if r.half != nil {
			what[len(what)-1] += ", left " + r.half()
		}
	}
	killed(after)
	for range most - 1 {
		run := b.killAt(t, r.held, 0, w.again, r.args...)
		if !run.unseen {
			w.again = aim(w.again, run.killed, run.after)
		}
		switch {
		case run.killed:
			killed(run.after)
			continue
		case run.err == nil || r.done != "" && strings.Contains(run.out, r.done):
			what = append(what, "a re-run ended by itself")
			return kills, what
		}
		// It failed (the killed run's session may still hold the lock
		// for a moment): the next run may go further.
		what = append(what, "a re-run failed")
		t.Logf("re-run of tenancy %s: %v\n%s", strings.Join(r.args, " "), run.err, run.out)
	}
	return kills, what
}

// Advisory locks on the catalog that a run holds while it works on a
// tenant: provisioning and purging (catalog.LockTenant), moving.
const (
	tenantLock = "tenancy.tenant:"
	moveLock   = "tenancy.move:"
)

// locked returns a function that reports whether a session holds the
// advisory lock named lock for the tenant slug on the catalog.
func (b *bundle) locked(t *testing.T, lock, slug string) func() bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM pg_locks l, catalog.tenants t,
			LATERAL (SELECT hashtextextended('`+lock+`' || t.id::text, 0) AS key) h
		WHERE t.slug = $1 AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid::bigint = (h.key >> 32) & 4294967295 AND l.objid::bigint = h.key & 4294967295)`, slug)
}

// checkAudit checks that the tenant's audit log and the control plane's log
// verify.
func (b *bundle) checkAudit(t *testing.T, slug string) {
	t.Helper()
	b.mustRun(t, "audit", "verify", "--tenant", slug)
	b.mustRun(t, "audit", "verify", "--control")
}
