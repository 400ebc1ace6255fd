package ratelimit_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/redistest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// TestRedisSharedBudget runs two limiters, as two app nodes would, each with
// its own Redis client, against one Redis and one key, as fast as they can
// for a second. Together they allow what one budget allows: at most the burst
// plus the rate times the elapsed time (+1% for the two clocks, +1), where two
// budgets would allow twice that; and at least 80% of it, a bound loose enough
// for clients that cannot keep up on a loaded machine.
func TestRedisSharedBudget(t *testing.T) {
	t.Parallel()
	srv := redistest.Default(t)
	prefix := redistest.Prefix()
	nodes := []*ratelimit.Redis{
		newRedis(t, srv, ratelimit.RedisConfig{Prefix: prefix}),
		newRedis(t, srv, ratelimit.RedisConfig{Prefix: prefix}),
	}
	lim := ratelimit.PerSecond(200, 20)
	var allowed [2]atomic.Int64
	ctx := context.Background()
	start := time.Now()
	stop := start.Add(time.Second)
	var wg sync.WaitGroup
	for i, n := range nodes {
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					res, err := n.Allow(ctx, "tenant", lim)
					if err != nil {
						t.Error(err)
						return
					}
					if res.Allowed {
						allowed[i].Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := allowed[0].Load() + allowed[1].Load()
	want := float64(lim.Burst) + lim.Rate*elapsed.Seconds()
	t.Logf("allowed %d + %d = %d in %v; one budget allows %.0f", allowed[0].Load(), allowed[1].Load(), total, elapsed, want)
	if most := float64(lim.Burst) + lim.Rate*elapsed.Seconds()*1.01 + 1; float64(total) > most {
		t.Fatalf("the two nodes allowed %d together, more than one budget's %.0f", total, most)
	}
	if float64(total) < want*0.8 {
		t.Fatalf("the two nodes allowed %d together, less than 80%% of one budget's %.0f", total, want)
	}
	if allowed[0].Load() == 0 || allowed[1].Load() == 0 {
		t.Fatalf("one node was never allowed anything: %d and %d", allowed[0].Load(), allowed[1].Load())
	}
	for i, n := range nodes {
		if s := n.Stats(); s.Failures != 0 || s.Fallbacks != 0 {
			t.Errorf("node %d used its fallback: %+v", i, s)
		}
	}
}

// TestRedisOutage stops Redis in the middle of the test: a fail-open limiter
// goes on deciding with its local fallback, a fail-closed one denies with
// CodeUnavailable; each logs once and counts; both go back to Redis by
// themselves once it runs again.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	var openLog, closedLog tenanttest.SyncBuffer
	open := newRedis(t, srv, ratelimit.RedisConfig{RetryInterval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&openLog, nil))})
	closed := newRedis(t, srv, ratelimit.RedisConfig{RetryInterval: 100 * time.Millisecond, FailClosed: true, Logger: slog.New(slog.NewTextHandler(&closedLog, nil))})
	lim := ratelimit.PerSecond(1, 3)

	// Up: both share Redis's state for the key.
	for i, l := range []*ratelimit.Redis{open, closed, open} {
		if res, err := l.Allow(ctx, "k", lim); err != nil || !res.Allowed {
			t.Fatalf("call %d with redis up: %+v, %v", i, res, err)
		}
	}
	if res, _ := closed.Allow(ctx, "k", lim); res.Allowed {
		t.Fatal("the shared budget was not enforced with redis up")
	}

	srv.Stop(t)
	// Fail open: the local fallback has its own, fresh budget for the key.
	for i := range 3 {
		if res, err := open.Allow(ctx, "k", lim); err != nil || !res.Allowed {
			t.Fatalf("fail-open call %d with redis down: %+v, %v", i, res, err)
		}
	}
	if res, err := open.Allow(ctx, "k", lim); err != nil || res.Allowed {
		t.Fatalf("the fallback did not enforce the limit: %+v, %v", res, err)
	}
	if s := open.Stats(); !s.Down || s.Failures < 1 || s.Fallbacks != 4 || s.Denials != 0 {
		t.Fatalf("fail-open stats while down: %+v", s)
	}
	// Fail closed: denied, with a code the HTTP layer answers 503.
	for range 3 {
		res, err := closed.Allow(ctx, "other", lim)
		tenanttest.WantCode(t, "fail-closed call with redis down", err, tenancy.CodeUnavailable)
		if res.Allowed || res.RetryAfter <= 0 {
			t.Fatalf("fail-closed result: %+v", res)
		}
	}
	if s := closed.Stats(); !s.Down || s.Denials != 3 || s.Fallbacks != 0 {
		t.Fatalf("fail-closed stats while down: %+v", s)
	}

	srv.Restart(t) // empty: the key's state is gone with the old process
	for name, l := range map[string]*ratelimit.Redis{"open": open, "closed": closed} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			res, err := l.Allow(ctx, "after-"+name, lim)
			if err == nil && !l.Stats().Down {
				if !res.Allowed || res.Remaining != 2 {
					t.Fatalf("%s: first decision after recovery: %+v", name, res)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: did not recover within 5s: %+v, %v", name, l.Stats(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Both nodes share Redis's budget again.
	open.Allow(ctx, "shared-again", ratelimit.PerSecond(1, 1))
	if res, _ := closed.Allow(ctx, "shared-again", ratelimit.PerSecond(1, 1)); res.Allowed {
		t.Fatal("after recovery the nodes do not share the budget")
	}
	for name, log := range map[string]*tenanttest.SyncBuffer{"open": &openLog, "closed": &closedLog} {
		s := log.String()
		if strings.Count(s, "redis unavailable") != 1 || strings.Count(s, "available again") != 1 {
			t.Errorf("%s: want one line for the outage and one for the recovery, got:\n%s", name, s)
		}
	}
	if !strings.Contains(openLog.String(), "failing open") || !strings.Contains(closedLog.String(), "failing closed") {
		t.Errorf("the log lines do not say the mode:\n%s\n%s", openLog.String(), closedLog.String())
	}
}

// TestRedisOneProbeAfterOutage: while Redis stays down, one decision per
// RetryInterval tries it again; the decisions made meanwhile go to the
// fallback at once instead of each waiting on a refused dial.
func TestRedisOneProbeAfterOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	l := newRedis(t, srv, ratelimit.RedisConfig{RetryInterval: 100 * time.Millisecond})
	lim := ratelimit.PerSecond(1000, 1000)
	if _, err := l.Allow(ctx, "k", lim); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if _, err := l.Allow(ctx, "k", lim); err != nil || l.Stats().Failures != 1 {
		t.Fatalf("first decision with redis down: %v %+v", err, l.Stats())
	}
	time.Sleep(150 * time.Millisecond) // past RetryInterval: Redis is due to be tried again

	wantOneProbe(t, l, "after RetryInterval")
}

// wantOneProbe makes 20 decisions at once on l, a fail-open limiter whose
// Redis is down and due to be tried again, with one failure recorded so far:
// every decision is allowed by the fallback, and only one tries Redis.
func wantOneProbe(t *testing.T, l *ratelimit.Redis, when string) {
	t.Helper()
	const n = 20
	var start, done sync.WaitGroup
	start.Add(1)
	for range n {
		done.Go(func() {
			start.Wait()
			if res, err := l.Allow(context.Background(), "k", ratelimit.PerSecond(1000, 1000)); err != nil || !res.Allowed {
				t.Errorf("fail-open decision %s: %+v, %v", when, res, err)
			}
		})
	}
	start.Done()
	done.Wait()
	if s := l.Stats(); s.Failures != 2 || s.Fallbacks != n+1 {
		t.Errorf("%d decisions at once %s: %+v; want one more failure (one probe) and every decision by the fallback", n, when, s)
	}
}

// countHook counts the commands a client sends.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestRedisOneRoundTrip counts the commands the limiter sends: one per
// decision once Redis knows the script (the first decision also loads it).
func TestRedisOneRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts, err := redis.ParseURL(redistest.Default(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	defer client.Close()
	hook := &countHook{}
	client.AddHook(hook)
	l, err := ratelimit.NewRedis(ratelimit.RedisConfig{Client: client, Prefix: redistest.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Allow(ctx, "warm", ratelimit.PerSecond(10, 10)); err != nil {
		t.Fatal(err)
	}
	before := hook.n.Load()
	for range 100 {
		if _, err := l.Allow(ctx, "k", ratelimit.PerSecond(10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if n := hook.n.Load() - before; n != 100 {
		t.Fatalf("%d commands for 100 decisions, want 100", n)
	}
}
