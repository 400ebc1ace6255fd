package connpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestPgxConfig runs the Manager on real PostgreSQL with two databases as
// two keys: idle connections are reused (same backend), connections left in
// a transaction are not, the budget holds as the server counts backends, and
// Close leaves no backend behind.
func TestPgxConfig(t *testing.T) {
	leakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	srv := pgtest.DefaultServer(t)
	other := srv.NewDatabase(t, "")
	appName := fmt.Sprintf("connpool_test_%d", os.Getpid())
	cfg := PgxConfig(2, func(key string) (*pgx.ConnConfig, error) {
		cc, err := pgx.ParseConfig(srv.URL(key))
		if err != nil {
			return nil, err
		}
		cc.RuntimeParams["application_name"] = appName
		return cc, nil
	})
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	backends := func() int {
		var n int
		err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// A closed connection's backend exits a moment after the client has
	// gone, so the server's count is awaited, not read once.
	waitBackends := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for n := backends(); n != want; n = backends() {
			if time.Now().After(deadline) {
				t.Fatalf("server has %d backends of this test, want %d", n, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	acquire := func(key string) (Lease[*pgx.Conn], int32) {
		t.Helper()
		l, err := m.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var pid int32
		var db string
		if err := l.Conn().QueryRow(ctx, "SELECT pg_backend_pid(), current_database()").Scan(&pid, &db); err != nil {
			t.Fatal(err)
		}
		if db != key {
			t.Fatalf("connection for %s is on database %s", key, db)
		}
		return l, pid
	}

	t.Run("ReusesIdle", func(t *testing.T) {
		l, pid := acquire("postgres")
		l.Release()
		l, again := acquire("postgres")
		l.Release()
		if again != pid {
			t.Fatalf("backend %d, want the idle %d again", again, pid)
		}
	})

	t.Run("DropsConnectionInTransaction", func(t *testing.T) {
		l, pid := acquire("postgres")
		if _, err := l.Conn().Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		l.Release()
		if st := m.Stats(); st.Open != 0 {
			t.Fatalf("connection left in a transaction was kept: %+v", st)
		}
		l, again := acquire("postgres")
		l.Release()
		if again == pid {
			t.Fatal("connection left in a transaction was reused")
		}
	})

	t.Run("Budget", func(t *testing.T) {
		a, _ := acquire("postgres")
		b, _ := acquire(other)
		waitBackends(2)

		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := m.Acquire(short, "postgres"); !errors.Is(err, ErrBudgetExhausted) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("acquire over budget: %v", err)
		}

		b.Release()
		c, _ := acquire("postgres") // evicts the idle connection to other
		if open, _ := m.KeyStats(other); open != 0 {
			t.Fatalf("%s still has %d connections open", other, open)
		}
		if n := backends(); n > 2 {
			t.Fatalf("server has %d backends of this test right after an eviction, budget 2", n)
		}
		waitBackends(2)
		a.Release()
		c.Destroy()
		waitBackends(1)
	})

	t.Run("Close", func(t *testing.T) {
		l, _ := acquire(other)
		m.Close()
		if _, err := m.Acquire(ctx, "postgres"); !errors.Is(err, ErrClosed) {
			t.Fatalf("acquire after close: %v", err)
		}
		if l.Conn().IsClosed() {
			t.Fatal("Close closed a leased connection")
		}
		l.Release()
		if !l.Conn().IsClosed() {
			t.Fatal("leased connection kept after Close")
		}
		waitBackends(0)
	})
}

// TestPgxCloseAwaitsBackendExit closes connections and asks the server at once
// whether their backends are still there: Close returns only after the server
// has hung up, which PostgreSQL does after the backend has left
// pg_stat_activity. Without the wait, a backend is still listed for a few
// milliseconds after pgx's own Close, and an eviction dialing in its slot
// makes the server count one connection over the budget.
func TestPgxCloseAwaitsBackendExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := pgtest.DefaultServer(t)
	cfg := PgxConfig(1, func(key string) (*pgx.ConnConfig, error) { return pgx.ParseConfig(srv.URL(key)) })
	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())

	for i := range 40 {
		c, err := cfg.Dial(ctx, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil { // a used connection, as the pool closes them
			t.Fatal(err)
		}
		pid := c.PgConn().PID()
		cfg.Close(c)
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("close %d: backend %d still in pg_stat_activity after Close returned", i, pid)
		}
	}
}
