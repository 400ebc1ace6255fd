package connpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// thrashRun is a closed-loop workload over a fake server in a synctest
// bubble: workers each run transactions for keys drawn by pick, one after
// the other, each holding its connection for tx; a dial takes dial.
type thrashRun struct {
	budget, workers, txPerWorker int
	tx, dial, reuseWait          time.Duration
	pick                         func(r *rand.Rand) string
}

type thrashResult struct {
	dials, evictions int64
	elapsed          time.Duration
	maxOpen          int
}

func (run thrashRun) do(t *testing.T) thrashResult {
	t.Helper()
	var res thrashResult
	synctest.Test(t, func(t *testing.T) {
		s := newFakeServer()
		s.hook = func(ctx context.Context, key string) error {
			time.Sleep(run.dial)
			return nil
		}
		cfg := s.config(run.budget, 0)
		cfg.ReuseWait = run.reuseWait
		b := setupWith(t, s, cfg)
		start := time.Now()
		var wg sync.WaitGroup
		for w := range run.workers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for range run.txPerWorker {
					l, err := b.m.Acquire(context.Background(), run.pick(r))
					if err != nil {
						t.Error(err)
						return
					}
					time.Sleep(run.tx)
					l.Release()
				}
			})
		}
		wg.Wait()
		st := b.m.Stats()
		res = thrashResult{st.Dials, st.Evictions, time.Since(start), s.stats().maxOpen}
	})
	return res
}

// zipfKeys picks "main" two times in three (the database of the shared and
// schema tenants) and else one of n tenant databases by Zipf (s = 1.1), as
// the scale benchmark does.
func zipfKeys(n int) func(r *rand.Rand) string {
	return func(r *rand.Rand) string {
		if r.IntN(3) < 2 {
			return "main"
		}
		z := rand.NewZipf(r, 1.1, 1, uint64(n-1))
		return fmt.Sprintf("db%d", z.Uint64())
	}
}

// TestEvictionThrash runs the scale benchmark's workload in virtual time: 32
// clients, a budget of 50, one busy database and 20 tenant databases by
// Zipf, transactions of 2ms, dials of 10ms. Without ReuseWait, a transaction
// for a database whose connections are all busy evicts another database's
// idle connection, whose next transaction evicts in turn: about one
// transaction in eight dials. With it, the pool settles and dials little
// more than once per slot.
func TestEvictionThrash(t *testing.T) {
	leakCheck(t)
	run := thrashRun{budget: 50, workers: 32, txPerWorker: 300, tx: 2 * time.Millisecond, dial: 10 * time.Millisecond, pick: zipfKeys(20)}
	total := run.workers * run.txPerWorker
	report := func(name string, res thrashResult) {
		t.Logf("%s: %d tx, %d dials, %d evictions, %.0f tx/s, max open %d",
			name, total, res.dials, res.evictions, float64(total)/res.elapsed.Seconds(), res.maxOpen)
		if res.maxOpen > run.budget {
			t.Errorf("%s: server saw %d connections, budget %d", name, res.maxOpen, run.budget)
		}
	}
	evictAtOnce := run.do(t)
	report("no reuse wait", evictAtOnce)
	run.reuseWait = 10 * time.Millisecond
	waited := run.do(t)
	report("reuse wait 10ms", waited)

	if evictAtOnce.dials < int64(total/20) {
		t.Errorf("no reuse wait: only %d dials; the workload no longer shows the thrash", evictAtOnce.dials)
	}
	if limit := int64(3 * run.budget); waited.dials > limit {
		t.Errorf("reuse wait: %d dials for %d transactions, want at most %d", waited.dials, total, limit)
	}
	if waited.elapsed > evictAtOnce.elapsed {
		t.Errorf("reuse wait: took %v, longer than evicting at once (%v)", waited.elapsed, evictAtOnce.elapsed)
	}
}

func TestReuseWait(t *testing.T) {
	leakCheck(t)
	const wait = 10 * time.Millisecond

	// setupFull returns a budget of 2, full: one connection of "a" held, one
	// of "b" idle.
	setupFull := func(t *testing.T) (*testBundle, Lease[*fakeConn], *fakeConn) {
		s := newFakeServer()
		cfg := s.config(2, 0)
		cfg.ReuseWait = wait
		b := setupWith(t, s, cfg)
		held := mustAcquire(t, b.m, "a")
		lb := mustAcquire(t, b.m, "b")
		idle := lb.Conn()
		lb.Release()
		return b, held, idle
	}

	t.Run("ServedByOwnRelease", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, held, idle := setupFull(t)
			mine := held.Conn()
			go func() {
				time.Sleep(wait / 2)
				held.Release()
			}()
			start := time.Now()
			l := mustAcquire(t, b.m, "a")
			defer l.Release()
			if waited := time.Since(start); waited != wait/2 {
				t.Fatalf("waited %v, want %v (until the release)", waited, wait/2)
			}
			if l.Conn() != mine || idle.closed.Load() {
				t.Fatalf("got %v (want %v), other key's idle closed: %v", l.Conn(), mine, idle.closed.Load())
			}
			if st := b.m.Stats(); st.Dials != 2 || st.Evictions != 0 {
				t.Fatalf("stats %+v: want no dial and no eviction", st)
			}
		})
	})

	t.Run("EvictsAfterWait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, held, idle := setupFull(t)
			defer held.Release()
			start := time.Now()
			l := mustAcquire(t, b.m, "a")
			defer l.Release()
			if waited := time.Since(start); waited != wait {
				t.Fatalf("waited %v, want exactly ReuseWait %v", waited, wait)
			}
			if !idle.closed.Load() {
				t.Fatal("the other key's idle connection was not evicted")
			}
			if st := b.m.Stats(); st.Evictions != 1 || st.Open != 2 {
				t.Fatalf("stats %+v: want one eviction within the budget", st)
			}
		})
	})

	t.Run("NoWaitForKeyWithoutConnections", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, held, idle := setupFull(t)
			defer held.Release()
			start := time.Now()
			l := mustAcquire(t, b.m, "c")
			defer l.Release()
			if waited := time.Since(start); waited != 0 || !idle.closed.Load() {
				t.Fatalf("waited %v, evicted %v: want an eviction at once", waited, idle.closed.Load())
			}
		})
	})

	t.Run("NoWaitWhileBudgetHasRoom", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newFakeServer()
			cfg := s.config(3, 0)
			cfg.ReuseWait = wait
			b := setupWith(t, s, cfg)
			held := mustAcquire(t, b.m, "a")
			defer held.Release()
			start := time.Now()
			l := mustAcquire(t, b.m, "a")
			defer l.Release()
			if waited := time.Since(start); waited != 0 {
				t.Fatalf("waited %v with a free slot", waited)
			}
		})
	})

	t.Run("DeadlineBeforeWait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, held, idle := setupFull(t)
			defer held.Release()
			ctx, cancel := context.WithTimeout(context.Background(), wait/2)
			defer cancel()
			_, err := b.m.Acquire(ctx, "a")
			if !errors.Is(err, ErrBudgetExhausted) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want a budget error wrapping the deadline", err)
			}
			if idle.closed.Load() {
				t.Fatal("evicted for a caller that gave up")
			}
			checkStats(t, b.m, Stats{Open: 2, InUse: 1, Idle: 1, Keys: 2})
		})
	})
}
