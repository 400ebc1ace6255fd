package connpool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestWait(t *testing.T) {
	leakCheck(t)

	t.Run("BoundedByDeadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, 1, 0)
			held := mustAcquire(t, b.m, "a")
			defer held.Release()

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := b.m.Acquire(ctx, "b")
			if waited := time.Since(start); waited != 5*time.Second {
				t.Fatalf("waited %v, want exactly the 5s deadline", waited)
			}
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrBudgetExhausted) {
				t.Fatalf("got %v, want a budget error wrapping the deadline", err)
			}
			if want := `connection budget of 1 exhausted waiting for "b": context deadline exceeded`; err.Error() != want {
				t.Fatalf("error %q, want %q", err, want)
			}
			checkStats(t, b.m, Stats{Open: 1, InUse: 1, Keys: 1})
		})
	})

	t.Run("ServedOnRelease", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, 1, 0)
			held := mustAcquire(t, b.m, "a")
			go func() {
				time.Sleep(time.Second)
				held.Release()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			l, err := b.m.Acquire(ctx, "b") // evicts a once released
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			if waited := time.Since(start); waited != time.Second {
				t.Fatalf("waited %v, want 1s", waited)
			}
			if !held.Conn().closed.Load() {
				t.Fatal("the released connection of a was not evicted for b")
			}
		})
	})

	t.Run("Canceled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, 1, 0)
			held := mustAcquire(t, b.m, "a")
			defer held.Release()
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error)
			go func() {
				_, err := b.m.Acquire(ctx, "b")
				errc <- err
			}()
			synctest.Wait()
			checkStats(t, b.m, Stats{Open: 1, InUse: 1, Waiting: 1, Keys: 2})
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBudgetExhausted) {
				t.Fatalf("got %v", err)
			}
			checkStats(t, b.m, Stats{Open: 1, InUse: 1, Keys: 1})
		})
	})

	t.Run("FirstComeFirstServed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, 1, 0)
			held := mustAcquire(t, b.m, "a")
			keys := []string{"w1", "w2", "w3", "w4"}
			served := make(chan string)
			var wg sync.WaitGroup
			defer wg.Wait()
			for _, key := range keys {
				wg.Go(func() {
					l, err := b.m.Acquire(context.Background(), key)
					if err != nil {
						t.Error(err)
						return
					}
					served <- key
					time.Sleep(time.Second)
					l.Release()
				})
				synctest.Wait() // queued in this order
			}
			held.Release()
			for _, want := range keys {
				if got := <-served; got != want {
					t.Fatalf("served %s, want %s", got, want)
				}
			}
		})
	})

	t.Run("PerKeyWaiterDoesNotBlockOthers", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, 2, 1)
			a := mustAcquire(t, b.m, "a")
			c := mustAcquire(t, b.m, "c")
			got := make(chan Lease[*fakeConn], 2)
			for _, key := range []string{"a", "b"} {
				go func() {
					l, err := b.m.Acquire(context.Background(), key)
					if err != nil {
						t.Error(err)
					}
					got <- l
				}()
				synctest.Wait()
			}
			// c's slot cannot serve the first waiter (a is at its limit),
			// so it goes to the second.
			c.Release()
			synctest.Wait()
			l := <-got
			if l.Conn().key != "b" {
				t.Fatalf("served %s, want b", l.Conn().key)
			}
			a.Release()
			if l2 := <-got; l2.Conn() != a.Conn() {
				t.Fatalf("a's waiter got %v, want the released %v", l2.Conn(), a.Conn())
			} else {
				l2.Release()
			}
			l.Release()
		})
	})
}

func TestIdleTimeout(t *testing.T) {
	leakCheck(t)
	synctest.Test(t, func(t *testing.T) {
		s := newFakeServer()
		cfg := s.config(4, 0)
		cfg.IdleTimeout = time.Minute
		b := setupWith(t, s, cfg)

		a := mustAcquire(t, b.m, "a")
		c := mustAcquire(t, b.m, "b")
		a.Release()
		time.Sleep(30 * time.Second)
		c.Release()

		time.Sleep(30*time.Second - time.Nanosecond)
		synctest.Wait()
		checkStats(t, b.m, Stats{Open: 2, Idle: 2, Keys: 2})

		time.Sleep(time.Nanosecond) // a has been idle for a minute
		synctest.Wait()
		if !a.Conn().closed.Load() || c.Conn().closed.Load() {
			t.Fatalf("closed a=%v b=%v, want only a", a.Conn().closed.Load(), c.Conn().closed.Load())
		}
		checkStats(t, b.m, Stats{Open: 1, Idle: 1, Keys: 1})

		// Using b resets its idle time.
		time.Sleep(20 * time.Second)
		l := mustAcquire(t, b.m, "b")
		l.Release()
		time.Sleep(59 * time.Second)
		synctest.Wait()
		checkStats(t, b.m, Stats{Open: 1, Idle: 1, Keys: 1})
		time.Sleep(time.Second)
		synctest.Wait()
		checkStats(t, b.m, Stats{})

		// The reaper wakes up again for connections idle after an empty spell.
		time.Sleep(time.Hour)
		l = mustAcquire(t, b.m, "c")
		l.Release()
		time.Sleep(time.Minute)
		synctest.Wait()
		if !l.Conn().closed.Load() {
			t.Fatal("connection idle after an empty spell not closed")
		}
		if st := b.server.stats(); st.open != 0 || st.doubleCloses != 0 {
			t.Fatalf("server %+v", st)
		}
	})
}
