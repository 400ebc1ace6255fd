package connpool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type testBundle struct {
	server *fakeServer
	m      *Manager[*fakeConn]
}

// setup returns a Manager over a fake server, closed when the test ends.
func setup(t *testing.T, budget, maxPerKey int) *testBundle {
	t.Helper()
	s := newFakeServer()
	return setupWith(t, s, s.config(budget, maxPerKey))
}

func setupWith(t *testing.T, s *fakeServer, cfg Config[*fakeConn]) *testBundle {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return &testBundle{server: s, m: m}
}

func mustAcquire(t *testing.T, m *Manager[*fakeConn], key string) Lease[*fakeConn] {
	t.Helper()
	l, err := m.Acquire(context.Background(), key)
	if err != nil {
		t.Fatalf("acquire %q: %v", key, err)
	}
	if got := l.Conn().key; got != key {
		t.Fatalf("acquire %q: got a connection for %q", key, got)
	}
	return l
}

// acquireNow acquires with a context that ends almost at once, for callers
// that must not get a connection.
func acquireNow(m *Manager[*fakeConn], key string) (Lease[*fakeConn], error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	return m.Acquire(ctx, key)
}

func checkStats(t *testing.T, m *Manager[*fakeConn], want Stats) {
	t.Helper()
	got := m.Stats()
	got.Dials, want.Dials = 0, 0
	got.Evictions, want.Evictions = 0, 0
	if got != want {
		t.Fatalf("stats: got %+v, want %+v", got, want)
	}
}

func TestNew(t *testing.T) {
	leakCheck(t)
	s := newFakeServer()
	for name, mutate := range map[string]func(*Config[*fakeConn]){
		"ZeroBudget":          func(c *Config[*fakeConn]) { c.Budget = 0 },
		"NegativeMaxPerKey":   func(c *Config[*fakeConn]) { c.MaxPerKey = -1 },
		"NegativeIdleTimeout": func(c *Config[*fakeConn]) { c.IdleTimeout = -time.Second },
		"NegativeReuseWait":   func(c *Config[*fakeConn]) { c.ReuseWait = -time.Second },
		"NoDial":              func(c *Config[*fakeConn]) { c.Dial = nil },
		"NoClose":             func(c *Config[*fakeConn]) { c.Close = nil },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s.config(2, 0)
			mutate(&cfg)
			if m, err := New(cfg); err == nil {
				m.Close()
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	t.Run("MaxPerKeyAboveBudget", func(t *testing.T) {
		b := setup(t, 2, 5)
		a1, a2 := mustAcquire(t, b.m, "a"), mustAcquire(t, b.m, "a")
		defer a1.Release()
		defer a2.Release()
		if _, err := acquireNow(b.m, "a"); !errors.Is(err, ErrBudgetExhausted) {
			t.Fatalf("third acquire over a budget of 2: got %v", err)
		}
	})
}

func TestAcquire(t *testing.T) {
	leakCheck(t)

	t.Run("ReusesIdleConnection", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2, 0)
		l := mustAcquire(t, b.m, "a")
		first := l.Conn()
		l.Release()
		checkStats(t, b.m, Stats{Open: 1, Idle: 1, Keys: 1})
		l = mustAcquire(t, b.m, "a")
		defer l.Release()
		if l.Conn() != first {
			t.Fatalf("got %v, want the idle %v", l.Conn(), first)
		}
		if st := b.m.Stats(); st.Dials != 1 {
			t.Fatalf("dials = %d, want 1", st.Dials)
		}
		checkStats(t, b.m, Stats{Open: 1, InUse: 1, Keys: 1})
	})

	t.Run("EvictsLeastRecentlyUsedIdleOfAnotherKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2, 0)
		la, lb := mustAcquire(t, b.m, "a"), mustAcquire(t, b.m, "b")
		ca, cb := la.Conn(), lb.Conn()
		la.Release() // a is now the least recently used
		lb.Release()
		lc := mustAcquire(t, b.m, "c")
		defer lc.Release()
		if !ca.closed.Load() || cb.closed.Load() {
			t.Fatalf("closed a=%v b=%v, want only a (least recently used)", ca.closed.Load(), cb.closed.Load())
		}
		if st := b.m.Stats(); st.Evictions != 1 || st.Open != 2 {
			t.Fatalf("stats %+v, want 1 eviction and 2 open", st)
		}
		if open, _ := b.m.KeyStats("a"); open != 0 {
			t.Fatalf("key a has %d open after eviction", open)
		}
	})

	t.Run("NeverEvictsBusy", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2, 0)
		la, lb := mustAcquire(t, b.m, "a"), mustAcquire(t, b.m, "b")
		defer la.Release()
		defer lb.Release()
		_, err := acquireNow(b.m, "c")
		var be *BudgetError
		if !errors.As(err, &be) || be.Limit != 2 || be.PerKey || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a budget error wrapping the deadline", err)
		}
		if want := `connection budget of 2 exhausted waiting for "c": context deadline exceeded`; err.Error() != want {
			t.Fatalf("error %q, want %q", err, want)
		}
		if la.Conn().closed.Load() || lb.Conn().closed.Load() {
			t.Fatal("a busy connection was closed")
		}
		checkStats(t, b.m, Stats{Open: 2, InUse: 2, Keys: 2})
	})

	t.Run("MaxPerKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3, 1)
		la := mustAcquire(t, b.m, "a")
		defer la.Release()
		_, err := acquireNow(b.m, "a")
		var be *BudgetError
		if !errors.As(err, &be) || !be.PerKey || be.Limit != 1 || !errors.Is(err, ErrBudgetExhausted) {
			t.Fatalf("second a: got %v, want a per-key limit error", err)
		}
		lb := mustAcquire(t, b.m, "b") // other keys still get connections
		defer lb.Release()
	})

	t.Run("DialErrorFreesSlot", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1, 0)
		b.server.refuse["bad"] = true
		_, err := b.m.Acquire(context.Background(), "bad")
		if !errors.Is(err, errDialRefused) {
			t.Fatalf("got %v, want the dial error", err)
		}
		if want := `dial "bad": dial refused`; err.Error() != want {
			t.Fatalf("error %q, want %q", err, want)
		}
		checkStats(t, b.m, Stats{})
		mustAcquire(t, b.m, "good").Release()
	})

	t.Run("DialPanicFreesSlot", func(t *testing.T) {
		t.Parallel()
		s := newFakeServer()
		s.hook = func(ctx context.Context, key string) error {
			if key == "boom" {
				panic("boom")
			}
			return nil
		}
		b := setupWith(t, s, s.config(1, 0))
		func() {
			defer func() { _ = recover() }()
			_, _ = b.m.Acquire(context.Background(), "boom")
		}()
		checkStats(t, b.m, Stats{})
		mustAcquire(t, b.m, "good").Release()
	})

	t.Run("CanceledContext", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1, 0)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := b.m.Acquire(ctx, "a"); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if st := b.m.Stats(); st.Dials != 0 {
			t.Fatal("dialed for a canceled context")
		}
	})

	t.Run("DialsWithoutLockButWithinBudget", func(t *testing.T) {
		t.Parallel()
		// Three dials must be in flight at once (so none holds the lock),
		// and a fourth caller must find the budget taken by them.
		s := newFakeServer()
		var m *Manager[*fakeConn]
		inFlight := make(chan struct{}, 3)
		proceed := make(chan struct{})
		s.hook = func(ctx context.Context, key string) error {
			if key == "d" {
				return errors.New("dialed over budget")
			}
			statsDone := make(chan struct{})
			go func() {
				_ = m.Stats() // blocks if Dial runs under the lock
				close(statsDone)
			}()
			select {
			case <-statsDone:
			case <-time.After(10 * time.Second):
				return errors.New("dial runs under the manager's lock")
			}
			inFlight <- struct{}{}
			<-proceed
			return nil
		}
		m = setupWith(t, s, s.config(3, 0)).m
		var wg sync.WaitGroup
		leases := make(chan Lease[*fakeConn], 3)
		for _, key := range []string{"a", "b", "c"} {
			wg.Go(func() {
				l, err := m.Acquire(context.Background(), key)
				if err != nil {
					t.Error(err)
					return
				}
				leases <- l
			})
		}
		for range 3 {
			select {
			case <-inFlight:
			case <-time.After(20 * time.Second):
				t.Error("three dials did not run at once")
				close(proceed)
				wg.Wait()
				return
			}
		}
		checkStats(t, m, Stats{Open: 3, InUse: 3, Keys: 3})
		if _, err := acquireNow(m, "d"); !errors.Is(err, ErrBudgetExhausted) {
			t.Fatalf("fourth acquire during three dials: got %v", err)
		}
		close(proceed)
		wg.Wait()
		close(leases)
		for l := range leases {
			l.Release()
		}
		checkStats(t, m, Stats{Open: 3, Idle: 3, Keys: 3})
	})
}

func TestRelease(t *testing.T) {
	leakCheck(t)

	t.Run("NotReusableCloses", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2, 0)
		l := mustAcquire(t, b.m, "a")
		l.Conn().broken.Store(true)
		l.Release()
		if !l.Conn().closed.Load() {
			t.Fatal("a connection that is not reusable was kept")
		}
		checkStats(t, b.m, Stats{})
	})

	t.Run("Destroy", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2, 0)
		l := mustAcquire(t, b.m, "a")
		l.Destroy()
		l.Release() // no-op after Destroy
		if !l.Conn().closed.Load() {
			t.Fatal("Destroy kept the connection")
		}
		checkStats(t, b.m, Stats{})
		if st := b.server.stats(); st.doubleCloses != 0 {
			t.Fatal("closed twice")
		}
	})

	t.Run("TwiceIsNoOp", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2, 0)
		stale := mustAcquire(t, b.m, "a")
		stale.Release()
		l := mustAcquire(t, b.m, "a") // the same connection, leased again
		if l.Conn() != stale.Conn() {
			t.Fatal("idle connection not reused")
		}
		stale.Release() // must not release l
		stale.Destroy()
		checkStats(t, b.m, Stats{Open: 1, InUse: 1, Keys: 1})
		copied := l
		l.Release()
		copied.Release()
		checkStats(t, b.m, Stats{Open: 1, Idle: 1, Keys: 1})
	})

	t.Run("ZeroLease", func(t *testing.T) {
		t.Parallel()
		var l Lease[*fakeConn]
		if l.Conn() != nil {
			t.Fatal("zero lease has a connection")
		}
		l.Release()
		l.Destroy()
	})
}

func TestCloseKey(t *testing.T) {
	leakCheck(t)
	s := newFakeServer()
	dialing := make(chan struct{})
	proceed := make(chan struct{})
	s.hook = func(ctx context.Context, key string) error {
		if key == "slow" {
			close(dialing)
			<-proceed
		}
		return nil
	}
	b := setupWith(t, s, s.config(4, 0))
	busy := mustAcquire(t, b.m, "a")
	idle := mustAcquire(t, b.m, "a")
	idle.Release()
	other := mustAcquire(t, b.m, "b")
	other.Release()

	slow := make(chan Lease[*fakeConn])
	go func() {
		l, err := b.m.Acquire(context.Background(), "slow")
		if err != nil {
			t.Error(err)
		}
		slow <- l
	}()
	<-dialing

	b.m.CloseKey("a")
	b.m.CloseKey("slow")
	b.m.CloseKey("unknown")
	if !idle.Conn().closed.Load() {
		t.Fatal("idle connection of the closed key still open")
	}
	if busy.Conn().closed.Load() {
		t.Fatal("busy connection closed under its holder")
	}
	if other.Conn().closed.Load() {
		t.Fatal("connection of another key closed")
	}
	busy.Release()
	if !busy.Conn().closed.Load() {
		t.Fatal("busy connection of the closed key kept on release")
	}
	close(proceed)
	l := <-slow
	l.Release()
	if !l.Conn().closed.Load() {
		t.Fatal("connection dialed before CloseKey kept on release")
	}
	checkStats(t, b.m, Stats{Open: 1, Idle: 1, Keys: 1})

	// The key works again afterwards.
	l = mustAcquire(t, b.m, "a")
	l.Release()
	if l.Conn().closed.Load() {
		t.Fatal("connection dialed after CloseKey closed on release")
	}
}

func TestClose(t *testing.T) {
	leakCheck(t)
	b := setup(t, 2, 0)
	busy := mustAcquire(t, b.m, "a")
	idle := mustAcquire(t, b.m, "b")
	idle.Release()
	busy2 := mustAcquire(t, b.m, "c") // evicts b
	_ = busy2

	waitErr := make(chan error)
	go func() {
		_, err := b.m.Acquire(context.Background(), "d")
		waitErr <- err
	}()
	for b.m.Stats().Waiting == 0 {
		time.Sleep(time.Millisecond)
	}

	b.m.Close()
	b.m.Close()
	if err := <-waitErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter: got %v, want ErrClosed", err)
	}
	if _, err := b.m.Acquire(context.Background(), "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after close: got %v, want ErrClosed", err)
	}
	if busy.Conn().closed.Load() {
		t.Fatal("Close closed a busy connection")
	}
	busy.Release()
	busy2.Release()
	if !busy.Conn().closed.Load() || !busy2.Conn().closed.Load() {
		t.Fatal("busy connection kept on release after Close")
	}
	checkStats(t, b.m, Stats{})
	if st := b.server.stats(); st.open != 0 || st.doubleCloses != 0 {
		t.Fatalf("server: %+v", st)
	}
}
