package platform_test

// Redis stopped and restarted under an application serving HTTP, with the
// request limits kept in Redis: two app nodes that fail open and one that
// fails closed, all on one Redis.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// redisNode is one app node whose request limits are kept in Redis.
type redisNode struct {
	name    string
	p       *platform.Platform
	srv     *httptest.Server
	limiter *ratelimit.Redis
	log     *tenanttest.SyncBuffer
}

// openRedisNode opens a platform on b's catalog with its own Redis client, as
// RedisConfig advises one (short timeouts, one retry, one dial per try), and
// serves it as limitServer does.
func openRedisNode(t *testing.T, b *tenanttest.Bundle, name, redisAddr string, failClosed bool) *redisNode {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr:        redisAddr,
		DialTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond,
		MaxRetries: 1, DialerRetries: 1,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	log := &tenanttest.SyncBuffer{}
	p, err := platform.Open(context.Background(), platform.Config{
		CatalogURL: b.Platform.Catalog.Pool().Config().ConnString(),
		DataModel:  crm.Migrations(),
		AppRole:    b.AppRole,
		Logger:     slog.New(slog.NewTextHandler(log, nil)),
		Limits:     &platform.LimitsConfig{Redis: rdb, FailClosed: failClosed},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &redisNode{name: name, p: p, srv: limitServer(t, p), limiter: p.Limiter.(*ratelimit.Redis), log: log}
}

// reply is what a node answered one request.
type reply struct {
	status     int
	code       tenancy.Code // the problem's, for errors
	retryAfter string
	took       time.Duration
	err        error // the request itself failed (no answer)
}

// get sends GET / for slug to n within 5 s; safe from any goroutine.
func (n *redisNode) get(slug string) reply {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.srv.URL, nil)
	if err != nil {
		return reply{err: err}
	}
	req.Header.Set("X-Tenant", slug)
	start := time.Now()
	res, err := n.srv.Client().Do(req)
	if err != nil {
		return reply{err: err, took: time.Since(start)}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	r := reply{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), took: time.Since(start), err: err}
	if res.StatusCode >= 400 && err == nil {
		var p httpx.Problem
		if res.Header.Get("Content-Type") != httpx.ContentType {
			r.err = fmt.Errorf("%d with Content-Type %q: %s", res.StatusCode, res.Header.Get("Content-Type"), body)
		} else if err := json.Unmarshal(body, &p); err != nil {
			r.err = fmt.Errorf("%d with a body that is not a problem: %q", res.StatusCode, body)
		}
		r.code = p.Code
	}
	return r
}

// flood sends n requests for slug, alternating over nodes, and counts the 204s
// and 429s; any other answer fails the test.
func flood(t *testing.T, slug string, n int, nodes ...*redisNode) (served, limited int) {
	t.Helper()
	for i := range n {
		node := nodes[i%len(nodes)]
		switch r := node.get(slug); {
		case r.err != nil:
			t.Fatalf("flood request %d to %s: %v", i, node.name, r.err)
		case r.status == http.StatusNoContent:
			served++
		case r.status == http.StatusTooManyRequests && r.code == tenancy.CodeRateLimited:
			limited++
		default:
			t.Fatalf("flood request %d to %s: %d %s", i, node.name, r.status, r.code)
		}
	}
	return served, limited
}

// TestFaultRedisRestart stops Redis while two app nodes (fail open) serve a
// steady flow of requests and a third node fails closed, then starts it again,
// empty, on the same port. Throughout the outage the fail-open nodes serve
// every request of a tenant within its limit, still limit a flooding tenant
// (each node on its own budget, so up to twice the shared one), log the
// outage once and count their fallback decisions; the fail-closed node answers
// 503 unavailable problems with a Retry-After at once. Once Redis answers
// again every node goes back to it by itself, and the two fail-open nodes
// share one budget again.
func TestFaultRedisRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rs := redistest.Start(t)
	b := tenanttest.Setup(t, nil)
	cat := b.Platform.Catalog
	const burst = 4
	// RPS 0.2: a flood of a few hundred milliseconds refills nothing.
	if err := cat.SetPlan(ctx, &catalog.Plan{Tier: "tiny", Limits: tenancy.Limits{RPS: 0.2, Burst: burst}}); err != nil {
		t.Fatal(err)
	}
	if err := cat.SetPlan(ctx, &catalog.Plan{Tier: "roomy", Limits: tenancy.Limits{RPS: 10000, Burst: 10000}}); err != nil {
		t.Fatal(err)
	}
	create := func(prefix string, tier tenancy.Tier) string {
		tn, err := b.Platform.CreateTenant(ctx, &provision.CreateOpts{Slug: pgtest.UniqueName(prefix), Model: tenancy.ModelShared, Tier: tier})
		if err != nil {
			t.Fatal(err)
		}
		return tn.Slug
	}
	steady, before, during, after := create("steady", "roomy"), create("flood", "tiny"), create("flood", "tiny"), create("flood", "tiny")

	a := openRedisNode(t, b, "a", rs.Addr(), false)
	bb := openRedisNode(t, b, "b", rs.Addr(), false)
	closed := openRedisNode(t, b, "closed", rs.Addr(), true)
	open := []*redisNode{a, bb}

	// Redis up: the two nodes share one budget.
	if served, limited := flood(t, before, 2*burst, a, bb); served != burst || limited != burst {
		t.Fatalf("redis up: %d served and %d limited of %d requests over two nodes, want %d and %d (one budget)", served, limited, 2*burst, burst, burst)
	}

	// The steady flow: a request every 10 ms to each fail-open node, from
	// before the outage to after the recovery. Every one must be served.
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		bad      []string
		sent     atomic.Int64
		slowest  time.Duration
		flowDone = func() {
			close(stop)
			wg.Wait()
		}
	)
	for _, n := range open {
		wg.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				r := n.get(steady)
				sent.Add(1)
				mu.Lock()
				slowest = max(slowest, r.took)
				if r.err != nil || r.status != http.StatusNoContent {
					bad = append(bad, fmt.Sprintf("%s: %d %s %v", n.name, r.status, r.code, r.err))
				}
				mu.Unlock()
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			flowDone()
		}
	}()
	time.Sleep(200 * time.Millisecond) // the flow runs through Redis

	rs.Stop(t)
	stoppedAt := time.Now()

	// Fail closed: a 503 problem with a Retry-After, at once.
	r := closed.get(steady)
	if r.err != nil || r.status != http.StatusServiceUnavailable || r.code != tenancy.CodeUnavailable || r.retryAfter == "" {
		t.Fatalf("fail-closed node with redis down: %d %q Retry-After %q, %v; want 503 unavailable with Retry-After", r.status, r.code, r.retryAfter, r.err)
	}
	if r.took > time.Second {
		t.Errorf("fail-closed node took %v to refuse", r.took)
	}
	refusedIn := r.took

	// Fail open: the flooding tenant is still limited, by each node's own
	// budget.
	for _, n := range open {
		if served, limited := flood(t, during, 2*burst, n); served != burst || limited != burst {
			t.Errorf("redis down, node %s: %d served and %d limited of %d requests, want %d and %d (its own budget)", n.name, served, limited, 2*burst, burst, burst)
		}
	}
	// The steady flow, on the fallback, for longer than RetryInterval (1 s):
	// Redis is tried again, fails again, and that is not logged again.
	time.Sleep(time.Until(stoppedAt.Add(1800 * time.Millisecond)))
	for _, n := range open {
		if s := n.limiter.Stats(); !s.Down || s.Failures < 2 || s.Fallbacks < 2*burst || s.Denials != 0 {
			t.Errorf("node %s while redis is down: %+v; want down, failures of a retry, fallback decisions, no denials", n.name, s)
		}
	}
	if s := closed.limiter.Stats(); !s.Down || s.Denials == 0 || s.Fallbacks != 0 {
		t.Errorf("fail-closed node while redis is down: %+v", s)
	}
	outage := time.Since(stoppedAt)

	rs.Restart(t) // empty, on the same port
	restartedAt := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	recovered := map[string]time.Duration{}
	for len(recovered) < 3 {
		if r := closed.get(steady); r.status == http.StatusNoContent {
			if _, ok := recovered[closed.name]; !ok {
				recovered[closed.name] = time.Since(restartedAt)
			}
		}
		for _, n := range open {
			if _, ok := recovered[n.name]; !ok && !n.limiter.Stats().Down {
				recovered[n.name] = time.Since(restartedAt)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back on redis 10 s after its restart: recovered %v; stats a %+v, b %+v, closed %+v",
				recovered, a.limiter.Stats(), bb.limiter.Stats(), closed.limiter.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var fallbacks []int64 // by the time each node was back on redis
	for _, n := range open {
		fallbacks = append(fallbacks, n.limiter.Stats().Fallbacks)
	}
	time.Sleep(100 * time.Millisecond) // the steady flow, on redis again
	flowDone()

	// The two nodes share one budget again, and the fallback decides nothing.
	if served, limited := flood(t, after, 2*burst, a, bb); served != burst || limited != burst {
		t.Errorf("redis back: %d served and %d limited of %d requests over two nodes, want %d and %d (one budget again)", served, limited, 2*burst, burst, burst)
	}
	for i, n := range open {
		if s := n.limiter.Stats(); s.Down || s.Fallbacks != fallbacks[i] {
			t.Errorf("node %s after the recovery: %+v; %d fallback decisions when it was back on redis", n.name, s, fallbacks[i])
		}
	}
	for _, n := range []*redisNode{a, bb, closed} {
		log := n.log.String()
		if strings.Count(log, "redis unavailable") != 1 || strings.Count(log, "redis is available again") != 1 {
			t.Errorf("node %s: want one log line for the outage and one for the recovery:\n%s", n.name, log)
		}
	}
	if !strings.Contains(a.log.String(), "failing open") || !strings.Contains(closed.log.String(), "failing closed") {
		t.Errorf("the log lines do not say the mode:\n%s\n%s", a.log.String(), closed.log.String())
	}

	mu.Lock()
	defer mu.Unlock()
	t.Logf("steady flow: %d requests, %d not served, slowest %v; fail-closed 503 in %v; outage %v; back on redis after the restart: %v; stats a %+v, b %+v, closed %+v",
		sent.Load(), len(bad), slowest.Round(time.Millisecond), refusedIn.Round(time.Millisecond), outage.Round(time.Millisecond), recovered,
		a.limiter.Stats(), bb.limiter.Stats(), closed.limiter.Stats())
	if len(bad) > 0 {
		t.Errorf("%d requests of a tenant within its limit were not served by a fail-open node; first: %s", len(bad), bad[0])
	}
	// Bounded by the client's options: one refused dial and one retry. With
	// go-redis's default DialerRetries (5, 100 ms apart) it is at least 400 ms.
	if slowest > 350*time.Millisecond {
		t.Errorf("a request of the steady flow took %v", slowest)
	}
}
