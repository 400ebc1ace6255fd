package router_test

// Faults of the data plane, on real PostgreSQL: a server restarted under
// load, a tenant database dropped under the router, and a slow tenant that
// would starve the others. Each test is bounded in time and stops by itself.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

// wantCodes checks that every error carries one of the codes a caller can act
// on (503 and the like), not CodeInternal.
func wantCodes(t *testing.T, errs []error, codes ...tenancy.Code) {
	t.Helper()
	for _, err := range errs {
		if !slices.Contains(codes, tenancy.ErrorCode(err)) {
			t.Errorf("error with code %s, want one of %v: %v", tenancy.ErrorCode(err), codes, err)
			return
		}
	}
}

var starve = flag.Bool("fault.starve", false, "run TestFaultSlowTenantDoesNotStarveOthers and TestFaultSlowTenantBehindPgBouncer without the per-database cap (both must fail)")

// insertCompany inserts one company named name for tn.
func insertCompany(ctx context.Context, r *router.Router, tn *tenancy.Tenant, name string) error {
	return r.Tx(tenancy.WithTenant(ctx, tn), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, name)
		return err
	})
}

// companyNames returns the names of tn's companies, read as the superuser.
func companyNames(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant) map[string]bool {
	t.Helper()
	conn := b.AdminConn(t, tn)
	rows, err := conn.Query(context.Background(),
		`SELECT name FROM `+dataplane.Ident(tn.Placement.Schema)+`.companies WHERE tenant_id = $1`, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return set
}

// TestFaultServerRestartUnderLoad restarts the PostgreSQL server of the data
// plane while writers in every model insert rows. Every insert the router
// acknowledged is there afterwards (nothing lost), the failures during the
// outage are errors (no panic, no hang past the caller's deadline), and the
// same router serves every tenant again without being restarted, 100
// transactions in a row without a failure.
func TestFaultServerRestartUnderLoad(t *testing.T) {
	t.Parallel()
	testServerRestartUnderLoad(t, false)
}

// testServerRestartUnderLoad is TestFaultServerRestartUnderLoad, with the
// router connecting through PgBouncer when pgbouncer is set.
func testServerRestartUnderLoad(t *testing.T, pgbouncer bool) {
	rs := pgtest.Restartable(t)
	b := tenanttest.Setup(t, &tenanttest.Opts{On: []*pgtest.Server{pgtest.DefaultServer(t), rs.Server}, MaxConnsPerServer: 8, PgBouncer: pgbouncer})
	const data = "pg2" // the restartable server
	tenants := []*tenancy.Tenant{
		b.CreateTenant(t, tenancy.ModelShared, data),
		b.CreateTenant(t, tenancy.ModelSchema, data),
		b.CreateTenant(t, tenancy.ModelDatabase, data),
	}
	r := b.Platform.Router

	const writersPerTenant = 3
	var (
		stop      = make(chan struct{})
		restarted atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		acked     = make([]map[string]bool, len(tenants))
		failures  []error
		// after counts each tenant's acknowledged inserts after the restart.
		after = make([]atomic.Int64, len(tenants))
		// streak counts the inserts acknowledged since the last failure.
		streak atomic.Int64
	)
	for i := range acked {
		acked[i] = map[string]bool{}
	}
	for i, tn := range tenants {
		for w := range writersPerTenant {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("w%d-%d", w, n)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err := insertCompany(ctx, r, tn, name)
					cancel()
					mu.Lock()
					if err == nil {
						acked[i][name] = true
						if restarted.Load() {
							after[i].Add(1)
						}
						streak.Add(1)
					} else {
						failures = append(failures, err)
						streak.Store(0)
					}
					mu.Unlock()
					if err != nil {
						time.Sleep(20 * time.Millisecond) // as a client backing off
					}
				}
			})
		}
	}

	time.Sleep(500 * time.Millisecond)
	rs.Restart(t)
	restarted.Store(true)
	restartedAt := time.Now()

	// Recovery: every tenant is served again, by the same router, and no
	// transaction fails any more (a dead connection kept in the pool would
	// fail one now and then, however many the others serve).
	deadline := time.Now().Add(30 * time.Second)
	for {
		recovered := streak.Load() >= 100
		for i := range tenants {
			if after[i].Load() < 20 {
				recovered = false
			}
		}
		if recovered {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			var last error
			if len(failures) > 0 {
				last = failures[len(failures)-1]
			}
			t.Fatalf("not recovered 30 s after the restart: acknowledged inserts since then per tenant: %d %d %d, %d since the last failure; last error: %v",
				after[0].Load(), after[1].Load(), after[2].Load(), streak.Load(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	recoveredIn := time.Since(restartedAt)
	close(stop)
	wg.Wait()

	if len(failures) == 0 {
		t.Errorf("no transaction failed across a server restart: the fault was not injected")
	}
	codes := map[tenancy.Code]int{}
	for _, err := range failures {
		codes[tenancy.ErrorCode(err)]++
	}
	t.Logf("recovered %v after the restart; %d failed transactions by code %v; first: %v",
		recoveredIn.Round(time.Millisecond), len(failures), codes, failures[0])

	for i, tn := range tenants {
		stored := companyNames(t, b, tn)
		lost := 0
		for name := range acked[i] {
			if !stored[name] {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("%s tenant: %d of %d acknowledged inserts lost across the restart", tn.Model, lost, len(acked[i]))
		}
	}
	wantCodes(t, failures, tenancy.CodeUnavailable)
	st := r.Stats(data)
	if st.Open > 8 || st.InUse != 0 {
		t.Errorf("after the restart the router holds %+v: want at most the budget open and none in use", st)
	}
}

// TestFaultTenantDatabaseDropped drops a database tenant's database under the
// router, connections and all. That tenant then gets errors, never a
// success nor a hang; every other tenant, including one in another database of
// the same server, is served throughout without a single error.
func TestFaultTenantDatabaseDropped(t *testing.T) {
	t.Parallel()
	testTenantDatabaseDropped(t, false)
}

// testTenantDatabaseDropped is TestFaultTenantDatabaseDropped, with the
// router connecting through PgBouncer when pgbouncer is set.
func testTenantDatabaseDropped(t *testing.T, pgbouncer bool) {
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 6, PgBouncer: pgbouncer})
	server := b.ServerNames[0]
	victim := b.CreateTenant(t, tenancy.ModelDatabase, server)
	others := []*tenancy.Tenant{
		b.CreateTenant(t, tenancy.ModelDatabase, server),
		b.CreateTenant(t, tenancy.ModelSchema, server),
		b.CreateTenant(t, tenancy.ModelShared, server),
	}
	r := b.Platform.Router
	ctx := context.Background()
	// Warm pools: the victim's database has idle connections when it goes.
	for i := range 3 {
		for _, tn := range append([]*tenancy.Tenant{victim}, others...) {
			if err := insertCompany(ctx, r, tn, fmt.Sprintf("warm-%d", i)); err != nil {
				t.Fatalf("warm-up %s: %v", tn.Model, err)
			}
		}
	}

	admin, err := pgx.Connect(ctx, b.Servers[0].URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+dataplane.Ident(victim.Placement.Database)+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}

	// Each error comes at once; behind PgBouncer the first waits in its queue
	// until the caller's deadline (PgBouncer holds a transaction while it
	// cannot log in to the server), the next are refused at once.
	bound, slow := 2*time.Second, 0
	if pgbouncer {
		bound, slow = 3500*time.Millisecond, 1
	}
	var victimErrs []error
	for i := range 10 {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		start := time.Now()
		err := insertCompany(tctx, r, victim, fmt.Sprintf("after-%d", i))
		cancel()
		if err == nil {
			t.Fatalf("attempt %d: an insert into a dropped database succeeded", i)
		}
		if d := time.Since(start); d > bound || (d > 2*time.Second && i >= slow) {
			t.Errorf("attempt %d: the error took %v", i, d)
		}
		victimErrs = append(victimErrs, err)
		for _, tn := range others {
			if err := insertCompany(ctx, r, tn, fmt.Sprintf("after-%d", i)); err != nil {
				t.Fatalf("attempt %d: %s tenant, untouched, failed: %v", i, tn.Model, err)
			}
		}
	}
	codes := map[tenancy.Code]int{}
	for _, err := range victimErrs {
		codes[tenancy.ErrorCode(err)]++
	}
	t.Logf("the dropped tenant's errors by code %v; first: %v; last: %v", codes, victimErrs[0], victimErrs[len(victimErrs)-1])
	wantCodes(t, victimErrs, tenancy.CodeUnavailable, tenancy.CodeNotFound, tenancy.CodeGone)
	if st := r.Stats(server); st.Open > 6 || st.InUse != 0 {
		t.Errorf("router holds %+v after the errors: want at most the budget open, none in use", st)
	}
}

// TestFaultSlowTenantDoesNotStarveOthers: a tenant whose transactions are slow
// (here pg_sleep, as a long report would be) and many at once cannot take more
// than its database's share of the server's connections, so the other tenants
// of the server are still served quickly, within the per-server budget.
// Without the per-database cap (MaxConnsPerDatabase equal to the budget) the
// slow tenant takes every connection and the others wait.
func TestFaultSlowTenantDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	testSlowTenantDoesNotStarveOthers(t, false)
}

// testSlowTenantDoesNotStarveOthers is TestFaultSlowTenantDoesNotStarveOthers,
// with the router connecting through PgBouncer when pgbouncer is set.
func testSlowTenantDoesNotStarveOthers(t *testing.T, pgbouncer bool) {
	const budget = 6
	perDB := 3
	if *starve {
		perDB = budget // mutation check: no per-database cap
	}
	b := tenanttest.Setup(t, &tenanttest.Opts{PgBouncer: pgbouncer})
	server := b.ServerNames[0]
	slow := b.CreateTenant(t, tenancy.ModelDatabase, server)
	others := []*tenancy.Tenant{
		b.CreateTenant(t, tenancy.ModelDatabase, server),
		b.CreateTenant(t, tenancy.ModelSchema, server),
		b.CreateTenant(t, tenancy.ModelShared, server),
	}
	ctx := context.Background()
	key, err := b.Platform.Catalog.TenantKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Config{
		Resolver: b.Platform.Cache, Servers: b.Platform.Catalog, Key: key, AppRole: b.AppRole,
		MaxConnsPerServer: budget, MaxConnsPerDatabase: perDB,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var wg sync.WaitGroup
	defer wg.Wait() // before r.Close

	// The slow tenant: 4× its share of callers, each holding a connection 1.5 s.
	const callers = 4
	var slowDone, slowUnavailable, slowCut atomic.Int64 // the rest ran out of time
	for range callers * perDB {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			err := r.Tx(tenancy.WithTenant(sctx, slow), func(tx pgx.Tx) error {
				_, err := tx.Exec(sctx, `SELECT pg_sleep(1.5)`)
				return err
			})
			switch {
			case err == nil:
				slowDone.Add(1)
			case errors.Is(err, tenancy.ErrUnavailable):
				slowUnavailable.Add(1) // waited for its share until its deadline
			case errors.Is(err, context.DeadlineExceeded):
				// got a connection late, and its own deadline cut pg_sleep short
				slowCut.Add(1)
			default:
				t.Errorf("slow tenant: %v", err)
			}
		})
	}
	// The slow tenant holds its share and the rest of its callers wait for
	// it: what the other tenants are served under. Behind PgBouncer, whose
	// pool has one server connection per database, one of them runs pg_sleep
	// and the others wait in PgBouncer's queue, each holding its router
	// connection all the same.
	var held router.Stats
	for deadline := time.Now().Add(500 * time.Millisecond); ; {
		held = r.Stats(server)
		if held.InUse == perDB && held.Waiting == (callers-1)*perDB {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow tenant did not fill its share of %d connections within 500 ms: %+v", perDB, held)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var worst time.Duration
	for i := range 10 {
		for _, tn := range others {
			octx, cancel := context.WithTimeout(ctx, time.Second)
			start := time.Now()
			err := insertCompany(octx, r, tn, fmt.Sprintf("fast-%d", i))
			cancel()
			if err != nil {
				t.Fatalf("%s tenant starved by a slow one: %v", tn.Model, err)
			}
			worst = max(worst, time.Since(start))
		}
	}
	st := r.Stats(server)
	wg.Wait()
	t.Logf("PgBouncer %v: other tenants' slowest transaction %v while the slow tenant held its share (%+v); slow tenant: %d done, %d unavailable, %d cut by their deadline; stats %+v",
		pgbouncer, worst, held, slowDone.Load(), slowUnavailable.Load(), slowCut.Load(), st)
	if worst > 900*time.Millisecond { // generous: the machine may be busy; starved callers fail at 1 s
		t.Errorf("other tenants waited up to %v behind a slow tenant", worst)
	}
	if st.Open > budget {
		t.Errorf("%d connections open, over the budget of %d", st.Open, budget)
	}
	if st.InUse != perDB {
		t.Errorf("after the other tenants were served, %d connections in use, want the slow tenant's share of %d: it did not hold it throughout", st.InUse, perDB)
	}
	if slowDone.Load() == 0 {
		t.Errorf("the slow tenant was not served at all")
	}
}
