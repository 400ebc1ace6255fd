package ratelimit_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/redistest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// backends returns one limiter of each kind, with keys of their own.
func backends(t *testing.T) map[string]ratelimit.Limiter {
	t.Helper()
	return map[string]ratelimit.Limiter{
		"Local": ratelimit.NewLocal(),
		"Redis": newRedis(t, redistest.Default(t), ratelimit.RedisConfig{Prefix: redistest.Prefix()}),
	}
}

// newRedis returns a Redis limiter on srv with a client of its own that gives
// up fast when Redis is away.
func newRedis(t *testing.T, srv *redistest.Server, cfg ratelimit.RedisConfig) *ratelimit.Redis {
	t.Helper()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	opts.MaxRetries = -1
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	cfg.Client = client
	r, err := ratelimit.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBehaviour runs the same decisions on both backends and wants the same
// answers: the behaviour that callers and the HTTP middleware rely on.
func TestBehaviour(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, l := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("BurstThenDeny", func(t *testing.T) {
				lim := ratelimit.PerSecond(1, 5) // one a second: no refill during the test
				for i := range 5 {
					res, err := l.Allow(ctx, "burst", lim)
					if err != nil || !res.Allowed || res.Remaining != 4-i || res.RetryAfter != 0 {
						t.Fatalf("call %d: %+v, %v; want allowed with %d remaining", i, res, err, 4-i)
					}
					if want := time.Duration(i+1) * time.Second; !near(res.ResetAfter, want, 50*time.Millisecond) {
						t.Errorf("call %d: reset after %v, want about %v", i, res.ResetAfter, want)
					}
				}
				res, err := l.Allow(ctx, "burst", lim)
				if err != nil || res.Allowed || res.Remaining != 0 {
					t.Fatalf("call past the burst: %+v, %v; want denied", res, err)
				}
				if !near(res.RetryAfter, time.Second, 50*time.Millisecond) {
					t.Fatalf("retry after %v, want about 1s", res.RetryAfter)
				}
			})
			t.Run("KeysAreIndependent", func(t *testing.T) {
				lim := ratelimit.PerSecond(1, 1)
				if res, _ := l.Allow(ctx, "k1", lim); !res.Allowed {
					t.Fatal("first call on k1 denied")
				}
				if res, _ := l.Allow(ctx, "k1", lim); res.Allowed {
					t.Fatal("second call on k1 allowed")
				}
				if res, _ := l.Allow(ctx, "k2", lim); !res.Allowed {
					t.Fatal("k1's use counted against k2")
				}
			})
			t.Run("RefillsAfterRetryAfter", func(t *testing.T) {
				lim := ratelimit.PerSecond(20, 2)
				var res ratelimit.Result
				for res.Allowed || res.Limit == (ratelimit.Limit{}) {
					res, _ = l.Allow(ctx, "refill", lim)
				}
				time.Sleep(res.RetryAfter + 5*time.Millisecond)
				if res, _ = l.Allow(ctx, "refill", lim); !res.Allowed {
					t.Fatalf("denied after waiting its retry-after: %+v", res)
				}
			})
			t.Run("LimitChangeApplies", func(t *testing.T) {
				small, big := ratelimit.PerSecond(1, 1), ratelimit.PerSecond(1, 3)
				l.Allow(ctx, "change", small)
				if res, _ := l.Allow(ctx, "change", small); res.Allowed {
					t.Fatal("over the small limit allowed")
				}
				if res, _ := l.Allow(ctx, "change", big); !res.Allowed || res.Remaining != 1 {
					t.Fatalf("after raising the burst: %+v, want allowed with 1 remaining", res)
				}
			})
			t.Run("RaisedLimitRefillsAtNewRate", func(t *testing.T) {
				slow, fast := ratelimit.PerSecond(0.1, 2), ratelimit.PerSecond(50, 10)
				l.Allow(ctx, "raise", slow)
				l.Allow(ctx, "raise", slow) // 20s of debt at the slow rate
				res, _ := l.Allow(ctx, "raise", fast)
				if res.Allowed || !near(res.RetryAfter, 20*time.Millisecond, 5*time.Millisecond) {
					t.Fatalf("first decision under the raised limit: %+v, want denied for one interval (20ms)", res)
				}
				time.Sleep(res.RetryAfter + 5*time.Millisecond)
				if res, _ := l.Allow(ctx, "raise", fast); !res.Allowed {
					t.Fatalf("one interval later: %+v, want allowed", res)
				}
			})
			t.Run("Unlimited", func(t *testing.T) {
				for range 100 {
					if res, err := l.Allow(ctx, "free", ratelimit.Limit{}); err != nil || !res.Allowed {
						t.Fatalf("zero limit: %+v, %v", res, err)
					}
				}
			})
			t.Run("BadInput", func(t *testing.T) {
				for _, lim := range []ratelimit.Limit{
					{Rate: -1, Burst: 1}, {Rate: 1, Burst: 0}, {Rate: 0, Burst: 3}, {Rate: math.NaN(), Burst: 1},
					{Rate: math.Inf(1), Burst: 1}, {Rate: 1, Burst: -2}, {Rate: 2e6, Burst: 1}, {Rate: 1, Burst: 2e6},
				} {
					_, err := l.Allow(ctx, "bad", lim)
					tenanttest.WantCode(t, "limit "+lim2s(lim), err, tenancy.CodeInvalid)
				}
				// Nothing was counted: the key still has its whole burst.
				if res, _ := l.Allow(ctx, "bad", ratelimit.PerSecond(1, 2)); !res.Allowed || res.Remaining != 1 {
					t.Fatalf("after refused limits: %+v, want the full burst", res)
				}
			})
		})
	}
}

func lim2s(l ratelimit.Limit) string {
	return time.Duration(l.Rate).String() + "/" + time.Duration(l.Burst).String()
}

func near(got, want, tolerance time.Duration) bool {
	return got >= want-tolerance && got <= want+tolerance
}
