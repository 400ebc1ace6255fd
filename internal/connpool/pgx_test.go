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
		if n := backends(); n > 3 {
			t.Fatalf("server has %d backends of this test, budget 2", n)
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
