package connpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

var errFlaky = errors.New("flaky network")

// TestConcurrency runs 50 goroutines over up to 200 keys with a budget of 10, with
// real scheduling (run it with -race). The fake server counts connections from
// the start of each dial to the end of each close, so it sees the worst
// moment; it must never count more than 10, and everything must finish well
// within the deadline (no deadlock, no lost wake-up).
func TestConcurrency(t *testing.T) {
	leakCheck(t)
	for _, tc := range []struct {
		name      string
		maxPerKey int
		keys      int
		reuseWait time.Duration
	}{
		{"ManyKeys", 0, 200, 0},
		{"FewKeysWithLimit", 2, 5, 0},
		{"ManyKeysWithReuseWait", 0, 20, 50 * time.Microsecond},
		{"FewKeysWithLimitAndReuseWait", 2, 5, 50 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const (
				budget     = 10
				goroutines = 50
				rounds     = 200
			)
			s := newFakeServer()
			s.hook = func(ctx context.Context, key string) error {
				time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond) // dials are slow
				if rand.IntN(50) == 0 {
					return errFlaky
				}
				return nil
			}
			cfg := s.config(budget, tc.maxPerKey)
			cfg.ReuseWait = tc.reuseWait
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			var wg sync.WaitGroup
			var mu sync.Mutex
			var served, timedOut int
			for g := range goroutines {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(g), 1))
					for range rounds {
						key := fmt.Sprintf("db%d", r.IntN(tc.keys))
						// Some callers give up quickly, as real requests do.
						actx, acancel := ctx, context.CancelFunc(func() {})
						if r.IntN(10) == 0 {
							actx, acancel = context.WithTimeout(ctx, time.Duration(r.IntN(200))*time.Microsecond)
						}
						l, err := m.Acquire(actx, key)
						acancel()
						switch {
						case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
							mu.Lock()
							timedOut++
							mu.Unlock()
							continue
						case errors.Is(err, errFlaky):
							continue
						case err != nil:
							t.Errorf("acquire %s: %v", key, err)
							return
						}
						c := l.Conn()
						if c.key != key || c.closed.Load() {
							t.Errorf("acquire %s: got %v, closed=%v", key, c, c.closed.Load())
						}
						if r.IntN(4) == 0 {
							time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
						}
						switch r.IntN(20) {
						case 0:
							l.Destroy()
						case 1:
							c.broken.Store(true)
							l.Release()
						case 2:
							m.CloseKey(key)
							l.Release()
						default:
							l.Release()
						}
						if r.IntN(5) == 0 {
							l.Release() // stale: must do nothing
						}
						mu.Lock()
						served++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if ctx.Err() != nil {
				t.Fatal("deadlock: callers still running at the deadline")
			}
			st := m.Stats()
			if st.InUse != 0 || st.Waiting != 0 || st.Closing != 0 || st.Open != st.Idle || st.Open > budget {
				t.Fatalf("stats at rest: %+v", st)
			}
			m.Close()
			ss := s.stats()
			t.Logf("served %d, gave up %d, dials %d, evictions %d, max open %d, max open per key %d",
				served, timedOut, st.Dials, st.Evictions, ss.maxOpen, ss.maxPerKey)
			if ss.maxOpen > budget {
				t.Fatalf("server saw %d connections open at once, budget %d", ss.maxOpen, budget)
			}
			if tc.maxPerKey > 0 && ss.maxPerKey > tc.maxPerKey {
				t.Fatalf("server saw %d connections of one key open at once, limit %d", ss.maxPerKey, tc.maxPerKey)
			}
			if ss.open != 0 || ss.doubleCloses != 0 {
				t.Fatalf("after Close: server %+v", ss)
			}
			if st := m.Stats(); st.Open != 0 || st.Keys != 0 {
				t.Fatalf("after Close: %+v", st)
			}
		})
	}
}
