package ratelimit_test

import (
	"context"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tenancyhq/tenancy/ratelimit"
)

// TestLocalTiming checks the exact times of GCRA on a fake clock.
func TestLocalTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		l := ratelimit.NewLocal()
		lim := ratelimit.PerSecond(10, 3) // one every 100ms, three at once
		for i := range 3 {
			if res, _ := l.Allow(ctx, "k", lim); !res.Allowed || res.Remaining != 2-i || res.ResetAfter != time.Duration(i+1)*100*time.Millisecond {
				t.Fatalf("call %d: %+v", i, res)
			}
		}
		res, _ := l.Allow(ctx, "k", lim)
		if res.Allowed || res.RetryAfter != 100*time.Millisecond || res.ResetAfter != 300*time.Millisecond {
			t.Fatalf("past the burst: %+v, want denied, retry after 100ms", res)
		}
		time.Sleep(99 * time.Millisecond)
		if res, _ := l.Allow(ctx, "k", lim); res.Allowed || res.RetryAfter != time.Millisecond {
			t.Fatalf("1ms early: %+v", res)
		}
		time.Sleep(time.Millisecond)
		if res, _ := l.Allow(ctx, "k", lim); !res.Allowed || res.Remaining != 0 {
			t.Fatalf("on time: %+v", res)
		}
		// A steady 10 per second is allowed forever.
		for i := range 50 {
			time.Sleep(100 * time.Millisecond)
			if res, _ := l.Allow(ctx, "k", lim); !res.Allowed {
				t.Fatalf("steady call %d denied: %+v", i, res)
			}
		}
		// After a quiet period the whole burst is back, and no more.
		time.Sleep(time.Hour)
		n := 0
		for {
			if res, _ := l.Allow(ctx, "k", lim); !res.Allowed {
				break
			}
			n++
		}
		if n != 3 {
			t.Fatalf("after an hour's rest %d allowed at once, want the burst, 3", n)
		}
	})
}

// TestLocalForgetsIdleKeys checks that keys back to their full burst are
// dropped, so that the memory of a Local is bounded by its active keys.
func TestLocalForgetsIdleKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		l := ratelimit.NewLocal()
		lim := ratelimit.PerSecond(1, 1)
		for i := range 100_000 {
			l.Allow(ctx, "key-"+strconv.Itoa(i), lim)
		}
		if n := l.Len(); n < 90_000 {
			t.Fatalf("%d keys held right after use, want about 100,000", n)
		}
		time.Sleep(2 * time.Second)
		// Traffic on 1,024 other keys: enough decisions for every shard to sweep.
		hot := make([]string, 1024)
		for i := range hot {
			hot[i] = "hot-" + strconv.Itoa(i)
		}
		for i := range 1024 * 1024 {
			l.Allow(ctx, hot[i%len(hot)], ratelimit.Limit{Rate: 1e6, Burst: 1e6})
		}
		if n := l.Len(); n > 2*len(hot) {
			t.Fatalf("%d keys held after they were all idle for 2s, want them dropped", n)
		}
	})
}

// BenchmarkLocalAllow measures one decision on a key seen before: it must not
// allocate.
func BenchmarkLocalAllow(b *testing.B) {
	ctx := context.Background()
	l := ratelimit.NewLocal()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "tenant-" + strconv.Itoa(i)
	}
	lim := ratelimit.PerSecond(1e6, 1000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Allow(ctx, keys[i%len(keys)], lim); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func TestLocalAllowDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	l := ratelimit.NewLocal()
	lim := ratelimit.PerSecond(100, 10)
	l.Allow(ctx, "tenant", lim)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(ctx, "tenant", lim) }); n != 0 {
		t.Fatalf("%v allocations per decision, want 0", n)
	}
}
