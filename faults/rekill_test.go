package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy"
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
	rekillEachModel(t, (*bundle).timeCreate, func(b *bundle, t *testing.T, dataDB string, model tenancy.Model) (rekill, func()) {
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
	rekillEachModel(t, (*bundle).timePurge, func(b *bundle, t *testing.T, dataDB string, model tenancy.Model) (rekill, func()) {
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
	})
}

// rekillEachModel makes two rounds of rekillRounds for the schema and the
// database model, in subtests of one bundle: next returns each round's
// command and check; the kill windows come from the duration of a
// reference operation, which timeOp measures.
func rekillEachModel(t *testing.T, timeOp func(*bundle, *testing.T, tenancy.Model) time.Duration,
	next func(b *bundle, t *testing.T, dataDB string, model tenancy.Model) (rekill, func())) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	for _, model := range []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase} {
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
	done    string        // what a run says when there is nothing left to do
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
		case run.err == nil || strings.Contains(run.out, r.done):
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
