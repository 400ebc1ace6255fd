package router_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/provision"
	"github.com/tenancyhq/tenancy/router"
)

// limitedRouter returns a router over b's platform that applies the
// catalog's limits.
func limitedRouter(t *testing.T, b *tenanttest.Bundle, cfg router.Config) *router.Router {
	t.Helper()
	key, err := b.Platform.Catalog.TenantKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p := b.Platform
	cfg.Resolver, cfg.Servers, cfg.Limits, cfg.Key, cfg.AppRole = p.Cache, p.Catalog, p.Cache, key, b.AppRole
	r, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// createTier creates a tenant of the given tier.
func createTier(t *testing.T, b *tenanttest.Bundle, tier tenancy.Tier) *tenancy.Tenant {
	t.Helper()
	tn, err := b.Platform.CreateTenant(context.Background(), &provision.CreateOpts{
		Slug: pgtest.UniqueName("lim"), Model: tenancy.ModelShared, Server: b.ServerNames[0], Tier: tier,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func setOverrides(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant, o catalog.Overrides) {
	t.Helper()
	if err := b.Platform.Catalog.SetOverrides(context.Background(), tn.ID, o); err != nil {
		t.Fatal(err)
	}
	b.Platform.Cache.Invalidate(tn.ID) // the notification would do it in a moment
}

func ptr[T any](v T) *T { return &v }

// TestStatementTimeout runs three tenants with different statement timeouts
// one after another on one backend: each transaction has its tenant's
// timeout, a query over it is cancelled, and no timeout outlives its
// transaction.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	t.Run("Direct", func(t *testing.T) { t.Parallel(); testStatementTimeout(t, false) })
	// Behind a transaction pooler with one server connection, every
	// transaction runs on one backend too.
	t.Run("PgBouncer", func(t *testing.T) { t.Parallel(); testStatementTimeout(t, true) })
}

func testStatementTimeout(t *testing.T, pgbouncer bool) {
	ctx := context.Background()
	b := tenanttest.Setup(t, &tenanttest.Opts{PgBouncer: pgbouncer})
	if err := b.Platform.Catalog.SetPlan(ctx, &catalog.Plan{Tier: "batch"}); err != nil { // no limits at all
		t.Fatal(err)
	}
	slow := createTier(t, b, "free")
	setOverrides(t, b, slow, catalog.Overrides{StatementTimeout: ptr(100 * time.Millisecond)})
	batch := createTier(t, b, "batch")
	free := createTier(t, b, "free")
	r := limitedRouter(t, b, router.Config{MaxConnsPerServer: 1})

	var pid int32
	var conn *pgx.Conn
	// idleTimeout reads the statement timeout of the idle pooled connection,
	// between transactions.
	idleTimeout := func() string {
		var got string
		if err := conn.QueryRow(ctx, `SHOW statement_timeout`).Scan(&got); err != nil {
			t.Fatalf("read the idle connection: %v", err)
		}
		return got
	}
	check := func(tn *tenancy.Tenant, want string, sleep time.Duration) error {
		return r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			conn = tx.Conn()
			var got string
			var p int32
			if err := tx.QueryRow(ctx, `SELECT current_setting('statement_timeout'), pg_backend_pid()`).Scan(&got, &p); err != nil {
				return err
			}
			if pid == 0 {
				pid = p
			} else if p != pid {
				t.Errorf("backend %d, want the reused %d", p, pid)
			}
			if got != want {
				t.Errorf("%s: statement_timeout %q, want %q", tn.Slug, got, want)
			}
			_, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, sleep.Seconds())
			return err
		})
	}
	for round := range 2 { // the second round pipelines the prepared statements
		err := check(slow, "100ms", 300*time.Millisecond)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" || tenancy.ErrorCode(err) != tenancy.CodeRateLimited {
			t.Fatalf("round %d: a query over the tenant's timeout: %v (code %s), want SQLSTATE 57014 as rate_limited (a plan's limit, not a 500)", round, err, tenancy.ErrorCode(err))
		}
		if got := idleTimeout(); got != "0" {
			t.Fatalf("round %d: after a failed transaction the idle connection has statement_timeout %q", round, got)
		}
		if err := check(slow, "100ms", 0); err != nil { // one that commits
			t.Fatal(err)
		}
		if got := idleTimeout(); got != "0" {
			t.Fatalf("round %d: after a committed transaction the idle connection has statement_timeout %q", round, got)
		}
		// A first statement over the timeout, in the same pipeline as the prelude.
		err = r.Tx(tenanttest.Ctx(slow), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, 0.3)
			return err
		})
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" || tenancy.ErrorCode(err) != tenancy.CodeRateLimited {
			t.Fatalf("round %d: a first statement over the tenant's timeout: %v (code %s), want SQLSTATE 57014 as rate_limited", round, err, tenancy.ErrorCode(err))
		}
		if err := check(batch, "0", 300*time.Millisecond); err != nil {
			t.Fatalf("round %d: the previous tenant's timeout outlived its transaction: %v", round, err)
		}
		if err := check(free, "5s", 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTxCap checks the cap on a tenant's concurrent transactions: callers over
// it wait in order, then fail with CodeRateLimited; other tenants are not
// affected; the cap holds under a flood; a change of plan applies at once.
func TestTxCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := tenanttest.Setup(t, nil)
	capped := createTier(t, b, "free")
	setOverrides(t, b, capped, catalog.Overrides{MaxConcurrentTx: ptr(2)})
	other := createTier(t, b, "free")
	r := limitedRouter(t, b, router.Config{MaxConnsPerServer: 10, TxWait: 300 * time.Millisecond, TxQueue: 3})

	// hold starts a transaction of tn that runs one statement and then waits
	// until done is closed.
	hold := func(tn *tenancy.Tenant, done <-chan struct{}) (started <-chan struct{}, result <-chan error) {
		s, res := make(chan struct{}), make(chan error, 1)
		go func() {
			res <- r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `SELECT 1`)
				close(s)
				<-done
				return err
			})
		}()
		return s, res
	}

	t.Run("OverTheCap", func(t *testing.T) {
		done := make(chan struct{})
		s1, r1 := hold(capped, done)
		s2, r2 := hold(capped, done)
		<-s1
		<-s2
		if running, _ := r.TenantTx(capped.ID); running != 2 {
			t.Fatalf("running %d, want 2", running)
		}
		start := time.Now()
		called := false
		err := r.Tx(tenanttest.Ctx(capped), func(pgx.Tx) error { called = true; return nil })
		tenanttest.WantCode(t, "a third transaction", err, tenancy.CodeRateLimited)
		if waited := time.Since(start); waited < 250*time.Millisecond || called {
			t.Fatalf("refused after %v (want about TxWait), fn called %v", waited, called)
		}
		// A deadline shorter than TxWait is kept.
		dctx, cancel := context.WithTimeout(tenanttest.Ctx(capped), 50*time.Millisecond)
		start = time.Now()
		err = r.Tx(dctx, func(pgx.Tx) error { return nil })
		cancel()
		tenanttest.WantCode(t, "a transaction with a short deadline", err, tenancy.CodeRateLimited)
		if waited := time.Since(start); waited > 200*time.Millisecond {
			t.Fatalf("waited %v past the caller's 50ms deadline", waited)
		}
		// Another tenant is served.
		if err := r.Tx(tenanttest.Ctx(other), func(tx pgx.Tx) error { _, err := tx.Exec(ctx, `SELECT 1`); return err }); err != nil {
			t.Fatalf("another tenant: %v", err)
		}
		// A waiter gets the slot that ends.
		waiter := make(chan error, 1)
		go func() { waiter <- r.Tx(tenanttest.Ctx(capped), func(pgx.Tx) error { return nil }) }()
		for _, w := r.TenantTx(capped.ID); w == 0; _, w = r.TenantTx(capped.ID) {
			time.Sleep(time.Millisecond)
		}
		close(done)
		for _, res := range []<-chan error{r1, r2, waiter} {
			if err := <-res; err != nil {
				t.Fatal(err)
			}
		}
		if running, waiting := r.TenantTx(capped.ID); running != 0 || waiting != 0 {
			t.Fatalf("after all ended: %d running, %d waiting", running, waiting)
		}
	})

	t.Run("QueueFull", func(t *testing.T) {
		done := make(chan struct{})
		defer close(done)
		s1, _ := hold(capped, done)
		s2, _ := hold(capped, done)
		<-s1
		<-s2
		for range 3 {
			go func() { _ = r.Tx(tenanttest.Ctx(capped), func(pgx.Tx) error { return nil }) }()
		}
		for _, w := r.TenantTx(capped.ID); w < 3; _, w = r.TenantTx(capped.ID) {
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		err := r.Tx(tenanttest.Ctx(capped), func(pgx.Tx) error { return nil })
		tenanttest.WantCode(t, "a transaction behind a full queue", err, tenancy.CodeRateLimited)
		if waited := time.Since(start); waited > 100*time.Millisecond {
			t.Fatalf("a full queue made the caller wait %v", waited)
		}
	})

	t.Run("Flood", func(t *testing.T) {
		flood := limitedRouter(t, b, router.Config{MaxConnsPerServer: 10, TxWait: 10 * time.Second, TxQueue: 100})
		var inside, most atomic.Int32
		var wg sync.WaitGroup
		for range 30 {
			wg.Go(func() {
				err := flood.Tx(tenanttest.Ctx(capped), func(tx pgx.Tx) error {
					n := inside.Add(1)
					defer inside.Add(-1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					_, err := tx.Exec(ctx, `SELECT pg_sleep(0.01)`)
					return err
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if m := most.Load(); m != 2 {
			t.Fatalf("at most %d transactions of the tenant ran at once, want its cap, 2", m)
		}
		if s := flood.Stats(b.ServerNames[0]); s.Open > 2 {
			t.Fatalf("the tenant's flood opened %d connections, more than its cap", s.Open)
		}
	})

	t.Run("PlanChange", func(t *testing.T) {
		setOverrides(t, b, capped, catalog.Overrides{MaxConcurrentTx: ptr(1)})
		done := make(chan struct{})
		s1, r1 := hold(capped, done)
		<-s1
		err := r.Tx(tenanttest.Ctx(capped), func(pgx.Tx) error { return nil })
		tenanttest.WantCode(t, "a second transaction under a cap of 1", err, tenancy.CodeRateLimited)
		setOverrides(t, b, capped, catalog.Overrides{MaxConcurrentTx: ptr(3)})
		if err := r.Tx(tenanttest.Ctx(capped), func(pgx.Tx) error { return nil }); err != nil {
			t.Fatalf("after raising the cap: %v", err)
		}
		close(done)
		if err := <-r1; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UnknownLimitsFailClosed", func(t *testing.T) {
		lost := createTier(t, b, "gold")
		if _, err := b.Platform.Catalog.Pool().Exec(ctx, `DELETE FROM catalog.plans WHERE tier = 'free'`); err != nil {
			t.Fatal(err)
		}
		b.Platform.Cache.Invalidate(lost.ID)
		called := false
		err := r.Tx(tenanttest.Ctx(lost), func(pgx.Tx) error { called = true; return nil })
		if err == nil || called {
			t.Fatalf("a tenant without a plan: %v, fn called %v; want an error before any SQL", err, called)
		}
	})
}

// TestFailedFirstStatementKeepsConnection runs transactions whose first
// statement, pipelined after the prelude, fails (over the statement timeout,
// and a plain SQL error): the connection is rolled back and reused, not
// discarded and dialed again.
func TestFailedFirstStatementKeepsConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := tenanttest.Setup(t, nil)
	slow := createTier(t, b, "free")
	setOverrides(t, b, slow, catalog.Overrides{StatementTimeout: ptr(50 * time.Millisecond)})
	r := limitedRouter(t, b, router.Config{MaxConnsPerServer: 1})
	for i := range 6 {
		sql := `SELECT count(*) FROM generate_series(1, 50000000 + $1::int)`
		if i%2 == 1 {
			sql = `SELECT 1 / ($1::int - 1)`
		}
		err := r.Tx(tenanttest.Ctx(slow), func(tx pgx.Tx) error {
			var n int64
			return tx.QueryRow(ctx, sql, "1").Scan(&n)
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Fatalf("%d: %v, want an SQL error", i, err)
		}
		err = r.Tx(tenanttest.Ctx(slow), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT 1 / ($1::int - 1)`, 1)
			return err
		})
		if !errors.As(err, &pgErr) {
			t.Fatalf("%d: Exec of a failing first statement: %v, want an SQL error", i, err)
		}
	}
	if s := r.Stats(b.ServerNames[0]); s.Dials != 1 {
		t.Fatalf("%d connections dialed, want 1 reused after every failure", s.Dials)
	}
}

// TestLimitsMadeInvalidByPlanChange: a tenant whose override sets only a rate
// stays valid on its plan until the plan drops its rate and burst; the limits
// are then invalid in the catalog. That is the platform's fault, not the
// caller's: the transaction must not fail with CodeInvalid (HTTP 400).
func TestLimitsMadeInvalidByPlanChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := tenanttest.Setup(t, nil)
	tier := tenancy.Tier(pgtest.UniqueName("tier"))
	if err := b.Platform.Catalog.SetPlan(ctx, &catalog.Plan{Tier: tier, Limits: tenancy.Limits{RPS: 10, Burst: 20}}); err != nil {
		t.Fatal(err)
	}
	tn := createTier(t, b, tier)
	setOverrides(t, b, tn, catalog.Overrides{RPS: ptr(5.0)})
	if err := b.Platform.Catalog.SetPlan(ctx, &catalog.Plan{Tier: tier}); err != nil { // no rate, no burst
		t.Fatal(err)
	}
	b.Platform.Cache.Invalidate(tn.ID)
	r := limitedRouter(t, b, router.Config{})
	err := r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error { return nil })
	tenanttest.WantCode(t, "transaction of a tenant with invalid limits", err, tenancy.CodeInternal)
}

// badLimits is a LimitsSource whose limits are invalid.
type badLimits struct{}

func (badLimits) Limits(context.Context, *tenancy.Tenant) (tenancy.Limits, error) {
	return tenancy.Limits{RPS: 5}, nil // a rate without a burst
}

// TestInvalidLimitsFromSource: limits that another LimitsSource than the
// catalog gets wrong are its fault too, not the caller's.
func TestInvalidLimitsFromSource(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	tn := b.CreateTenant(t, tenancy.ModelShared, b.ServerNames[0])
	key, err := b.Platform.Catalog.TenantKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Config{Resolver: b.Platform.Cache, Servers: b.Platform.Catalog, Limits: badLimits{},
		Key: key, AppRole: b.AppRole})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error { return nil })
	tenanttest.WantCode(t, "transaction with invalid limits from the source", err, tenancy.CodeInternal)
}

// TestDBTimeBudget: a tenant whose transactions held connections longer than
// its plan's database time is refused, 429-style, until it has paid the debt
// back; another tenant is not; a larger budget takes effect without a
// restart.
func TestDBTimeBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := tenanttest.Setup(t, nil)
	if err := b.Platform.Catalog.SetPlan(ctx, &catalog.Plan{Tier: "metered", Limits: tenancy.Limits{DBTime: 0.05}}); err != nil {
		t.Fatal(err)
	}
	heavy, light := createTier(t, b, "metered"), createTier(t, b, "metered")
	r := limitedRouter(t, b, router.Config{})
	sleep := func(tn *tenancy.Tenant, d string) error {
		return r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT pg_sleep($1::float8)`, d)
			return err
		})
	}
	if err := sleep(heavy, "0.5"); err != nil { // 0.05 s earned, 0.5 s spent: 9 s to pay back
		t.Fatal(err)
	}
	err := sleep(heavy, "0")
	if tenancy.ErrorCode(err) != tenancy.CodeRateLimited || !strings.Contains(err.Error(), "database time") {
		t.Fatalf("a tenant in debt of database time: %v, want rate_limited", err)
	}
	if err := sleep(light, "0"); err != nil {
		t.Errorf("another tenant of the plan: %v", err)
	}
	// A larger budget earns from when the router learns it: the debt is
	// paid back in about 5 ms instead of 9 s.
	setOverrides(t, b, heavy, catalog.Overrides{DBTime: ptr(100.0)})
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := sleep(heavy, "0")
		if err == nil {
			break
		}
		if tenancy.ErrorCode(err) != tenancy.CodeRateLimited || time.Now().After(deadline) {
			t.Fatalf("after a larger budget: %v", err)
		}
	}
}
