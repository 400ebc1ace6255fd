package platform_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/redistest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// limitQueries are the queries limitServer runs, by name (?q=), with the
// request's ?arg= as their one parameter.
var limitQueries = map[string]string{
	"sleep": `SELECT (SELECT count(*) FROM contacts) FROM pg_sleep($1::float8)`,
	// cheap reads a tenant table.
	"cheap": `SELECT count(*) FROM contacts WHERE $1::int >= 0`,
	// heavy takes seconds of CPU without a statement timeout.
	"heavy": `SELECT count(*) FROM generate_series(1, 50000000 + $1::int)`,
}

// limitServer serves GET / for the tenant in X-Tenant through resolve →
// limit → a handler that runs one of limitQueries in a tenant transaction
// (default: sleep for ?arg= seconds, default 0).
func limitServer(t testing.TB, p *platform.Platform) *httptest.Server {
	t.Helper()
	resolve, err := httpx.Middleware(httpx.Config{Resolver: p.Cache})
	if err != nil {
		t.Fatal(err)
	}
	limit, err := p.LimitMiddleware()
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arg := r.URL.Query().Get("arg")
		if arg == "" {
			arg = "0"
		}
		name := r.URL.Query().Get("q")
		if name == "" {
			name = "sleep"
		}
		query, ok := limitQueries[name]
		if !ok {
			httpx.WriteError(w, r, tenancy.Errorf(tenancy.CodeInvalid, "unknown query %q", name))
			return
		}
		err := p.Router.Tx(r.Context(), func(tx pgx.Tx) error {
			var n int64
			return tx.QueryRow(r.Context(), query, arg).Scan(&n)
		})
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(resolve(limit(h)))
	t.Cleanup(srv.Close)
	return srv
}

func request(t testing.TB, client *http.Client, url, slug string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("X-Tenant", slug)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

// TestLimitsEndToEnd runs requests through a platform opened with limits: the
// tenant's plan limits its requests (429 with the headers) and its concurrent
// transactions (429), other tenants are served, and a change of plan in the
// catalog applies without a restart.
func TestLimitsEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := tenanttest.Setup(t, &tenanttest.Opts{Limits: &platform.LimitsConfig{TxWait: 100 * time.Millisecond}})
	p := b.Platform
	if err := p.Catalog.SetPlan(ctx, &catalog.Plan{Tier: "tiny", Limits: tenancy.Limits{RPS: 1, Burst: 2, MaxConcurrentTx: 1, StatementTimeout: time.Second}}); err != nil {
		t.Fatal(err)
	}
	create := func(tier tenancy.Tier) *tenancy.Tenant {
		tn, err := p.CreateTenant(ctx, &provision.CreateOpts{Slug: pgtest.UniqueName("e2e"), Model: tenancy.ModelSchema, Tier: tier})
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	tiny, other := create("tiny"), create("free")
	srv := limitServer(t, p)
	client := srv.Client()

	for i := range 2 {
		if res := request(t, client, srv.URL, tiny.Slug); res.StatusCode != http.StatusNoContent || res.Header.Get("RateLimit-Policy") != `"tenant";q=2;w=2` {
			t.Fatalf("request %d: %d %v", i, res.StatusCode, res.Header)
		}
	}
	res := request(t, client, srv.URL, tiny.Slug)
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "1" || res.Header.Get("RateLimit") != `"tenant";r=0;t=2` {
		t.Fatalf("over the rate: %d %v", res.StatusCode, res.Header)
	}
	if res := request(t, client, srv.URL, other.Slug); res.StatusCode != http.StatusNoContent {
		t.Fatalf("another tenant: %d", res.StatusCode)
	}

	// The plan changes in the catalog; the running platform follows.
	if err := p.Catalog.SetPlan(ctx, &catalog.Plan{Tier: "tiny", Limits: tenancy.Limits{RPS: 1000, Burst: 100, MaxConcurrentTx: 1, StatementTimeout: time.Second}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for request(t, client, srv.URL, tiny.Slug).StatusCode != http.StatusNoContent {
		if time.Now().After(deadline) {
			t.Fatal("the raised plan did not apply within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Two slow requests at once: the second is over the cap of one
	// transaction and answered 429 by the router's error.
	var wg sync.WaitGroup
	statuses := make([]int, 2)
	for i := range 2 {
		wg.Go(func() { statuses[i] = request(t, client, srv.URL+"?arg=0.5", tiny.Slug).StatusCode })
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if statuses[0] != http.StatusNoContent || statuses[1] != http.StatusTooManyRequests {
		t.Fatalf("two transactions under a cap of one: %v, want 204 then 429", statuses)
	}
	// A query over the plan's statement timeout fails as the plan's other
	// limits do, 429; the next request is served.
	if res := request(t, client, srv.URL+"?arg=2", tiny.Slug); res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a query over the statement timeout: %d, want 429", res.StatusCode)
	}
	if res := request(t, client, srv.URL, tiny.Slug); res.StatusCode != http.StatusNoContent {
		t.Fatalf("after the timeout: %d", res.StatusCode)
	}
}

func TestLimitMiddlewareNeedsLimits(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	_, err := b.Platform.LimitMiddleware()
	tenanttest.WantCode(t, "LimitMiddleware without Config.Limits", err, tenancy.CodeInvalid)
}

// TestLimitsTwoNodesShareRedis opens two platforms on one catalog and one
// Redis, as two app nodes would: a tenant's request budget is one, whichever
// node its requests reach.
func TestLimitsTwoNodesShareRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Start(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	limits := &platform.LimitsConfig{Redis: rdb}
	b := tenanttest.Setup(t, &tenanttest.Opts{Limits: limits})
	first := b.Platform
	second, err := platform.Open(ctx, platform.Config{
		CatalogURL: first.Catalog.Pool().Config().ConnString(),
		DataModel:  crm.Migrations(),
		AppRole:    b.AppRole,
		Limits:     limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(second.Close)
	if err := first.Catalog.SetPlan(ctx, &catalog.Plan{Tier: "tiny", Limits: tenancy.Limits{RPS: 0.5, Burst: 3}}); err != nil {
		t.Fatal(err)
	}
	tn, err := first.CreateTenant(ctx, &provision.CreateOpts{Slug: pgtest.UniqueName("two"), Model: tenancy.ModelShared, Tier: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*httptest.Server{limitServer(t, first), limitServer(t, second)}
	var statuses []int
	for i := range 5 {
		srv := nodes[i%2]
		statuses = append(statuses, request(t, srv.Client(), srv.URL, tn.Slug).StatusCode)
	}
	want := []int{204, 204, 204, 429, 429}
	if !slices.Equal(statuses, want) {
		t.Fatalf("requests alternating between two nodes: %v, want %v (one budget of 3)", statuses, want)
	}
	if s := first.Limiter.(*ratelimit.Redis).Stats(); s.Failures != 0 {
		t.Fatalf("redis failed: %+v", s)
	}
}
