package router_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// TestConnectionBudget: more tenant databases than the server's connection
// budget are all served, the router never holds more connections than the
// budget (counted by PostgreSQL itself), idle databases give way, and a caller
// over budget waits until its context ends and then gets CodeUnavailable.
func TestConnectionBudget(t *testing.T) {
	t.Parallel()
	const budget = 3
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: budget})
	var tenants []*tenancy.Tenant
	for range 8 {
		tenants = append(tenants, b.CreateTenant(t, tenancy.ModelDatabase, b.ServerNames[0]))
	}
	r := b.Platform.Router
	admin := b.AdminConn(t, tenants[0])
	serverConns := func() int {
		var n int
		if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, b.AppRole).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	most, mostSeen := 0, 0
	for round := range 3 {
		for i, tn := range tenants {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
					if _, err := tx.Exec(context.Background(), `INSERT INTO companies (tenant_id, name) VALUES ($1, 'x')`, tn.ID); err != nil {
						return err
					}
					// Asked from inside the transaction, often on a connection
					// just dialed in an evicted one's slot: the victim's
					// backend must already be gone.
					var seen int
					err := tx.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, b.AppRole).Scan(&seen)
					mu.Lock()
					most = max(most, r.Stats(b.ServerNames[0]).Open)
					mostSeen = max(mostSeen, seen)
					mu.Unlock()
					return err
				})
				if err != nil {
					t.Errorf("round %d tenant %d: %v", round, i, err)
				}
			}()
		}
		wg.Wait()
		if n := serverConns(); n > budget {
			t.Errorf("PostgreSQL sees %d connections of the application role, over the budget of %d", n, budget)
		}
	}
	if mostSeen > budget {
		t.Errorf("PostgreSQL counted up to %d connections of the application role during transactions, over the budget of %d", mostSeen, budget)
	}
	st := r.Stats(b.ServerNames[0])
	if most > budget || st.Open > budget {
		t.Errorf("the router held up to %d connections (now %d), over the budget of %d", most, st.Open, budget)
	}
	if st.Evictions == 0 {
		t.Errorf("no idle connection was closed to make room for another database: %+v", st)
	}

	// Hold the whole budget; the next caller waits, then gives up with a clear error.
	hold, held := make(chan struct{}), make(chan struct{}, budget)
	for _, tn := range tenants[:budget] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
				held <- struct{}{}
				<-hold
				return nil
			})
		}()
	}
	for range budget {
		<-held
	}
	ctx, cancel := context.WithTimeout(tenanttest.Ctx(tenants[budget]), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Tx(ctx, func(tx pgx.Tx) error { return nil })
	waited := time.Since(start)
	close(hold)
	wg.Wait()
	if !errors.Is(err, tenancy.ErrUnavailable) {
		t.Fatalf("over budget: got %v, want CodeUnavailable", err)
	}
	if waited < 250*time.Millisecond {
		t.Errorf("over budget the caller gave up after %v instead of waiting for its context", waited)
	}
	// And once the budget frees up, the same tenant is served.
	if err := r.Tx(tenanttest.Ctx(tenants[budget]), func(tx pgx.Tx) error { return nil }); err != nil {
		t.Fatalf("after the budget freed up: %v", err)
	}
}
