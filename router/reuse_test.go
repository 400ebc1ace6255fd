package router_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// sessionState is what a pooled connection holds between transactions.
type sessionState struct {
	pid                               int32
	tenant, sig, actor, role, rawPath string
}

func readState(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (sessionState, error) {
	var s sessionState
	err := q.QueryRow(ctx, `SELECT pg_backend_pid(), coalesce(current_setting('app.tenant_id', true), ''), coalesce(current_setting('app.tenant_sig', true), ''),
		coalesce(current_setting('app.actor', true), ''), current_user, current_setting('search_path')`).
		Scan(&s.pid, &s.tenant, &s.sig, &s.actor, &s.role, &s.rawPath)
	return s, err
}

// TestConnectionReuse runs tenants of every model that share a database, one
// after another, on a pool of one connection, and proves the backend is the
// same and that nothing of one transaction survives into the next: not the
// tenant, its signature, the actor, the role nor the search_path — after a
// commit, an SQL error, a panic and a rollback.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 1})
	server := b.ServerNames[0]
	shared1 := b.CreateTenant(t, tenancy.ModelShared, server)
	schema1 := b.CreateTenant(t, tenancy.ModelSchema, server)
	shared2 := b.CreateTenant(t, tenancy.ModelShared, server)
	schema2 := b.CreateTenant(t, tenancy.ModelSchema, server)
	for _, tn := range []*tenancy.Tenant{shared1, schema1, shared2, schema2} {
		seed(t, b, tn)
	}
	r := b.Platform.Router
	var conn *pgx.Conn
	var pid int32
	ending := map[string]func(tx pgx.Tx) error{
		"Commit":   func(tx pgx.Tx) error { return nil },
		"SQLError": func(tx pgx.Tx) error { _, err := tx.Exec(context.Background(), `SELECT 1/0`); return err },
		"Rollback": func(tx pgx.Tx) error { return errors.New("rolled back on purpose") },
		"Panic":    func(tx pgx.Tx) error { panic("on purpose") },
	}
	order := []*tenancy.Tenant{schema1, shared1, schema2, shared2, schema1}
	for _, end := range []string{"Commit", "SQLError", "Rollback", "Panic"} {
		for i, tn := range order {
			ctx := tenancy.WithActor(tenanttest.Ctx(tn), tenancy.Actor{Kind: "user", ID: tn.Slug})
			func() {
				defer func() { _ = recover() }()
				_ = r.Tx(ctx, func(tx pgx.Tx) error {
					st, err := readState(context.Background(), tx)
					if err != nil {
						return err
					}
					conn = tx.Conn()
					if end != "Panic" { // a panic destroys the connection
						if pid == 0 {
							pid = st.pid
						} else if st.pid != pid {
							t.Errorf("%s %d: backend pid %d, want the reused %d", end, i, st.pid, pid)
						}
					}
					if st.tenant != tn.ID.String() || st.actor != "user:"+tn.Slug {
						t.Errorf("%s: in %s's transaction the settings say tenant %q, actor %q", end, tn.Slug, st.tenant, st.actor)
					}
					ids, err := collect(tx.Query(context.Background(), `SELECT tenant_id FROM contacts`))
					if err != nil {
						return err
					}
					if len(ids) != 2 {
						t.Errorf("%s: %s sees %d contacts, want its 2", end, tn.Slug, len(ids))
					}
					for _, id := range ids {
						if id != tn.ID {
							t.Errorf("%s: %s sees a row of %s", end, tn.Slug, id)
						}
					}
					return ending[end](tx)
				})
			}()
			if end == "Panic" {
				continue
			}
			// Between transactions the idle connection must hold nothing.
			st, err := readState(context.Background(), conn)
			if err != nil {
				t.Fatalf("read idle connection: %v", err)
			}
			if st.tenant != "" || st.sig != "" || st.actor != "" || st.role != b.AppRole || st.rawPath == `"`+tn.Placement.Schema+`"` {
				t.Errorf("%s: after %s's transaction the idle connection holds %+v", end, tn.Slug, st)
			}
			// And a query without the router's settings fails loudly, rather
			// than matching nothing.
			if _, err := conn.Exec(context.Background(), `SELECT count(*) FROM shared.contacts`); err == nil {
				t.Errorf("%s: a query outside a tenant transaction ran", end)
			}
		}
	}
}

// TestCancelledContextMidTransaction: a transaction cancelled mid-statement
// leaves nothing behind for the next tenant.
func TestCancelledContextMidTransaction(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 1})
	a := b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0])
	other := b.CreateTenant(t, tenancy.ModelShared, b.ServerNames[0])
	seed(t, b, a)
	seed(t, b, other)
	ctx, cancel := context.WithTimeout(tenanttest.Ctx(a), 200*time.Millisecond)
	defer cancel()
	err := b.Platform.Router.Tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT pg_sleep(5)`)
		return err
	})
	if err == nil {
		t.Fatal("a cancelled transaction succeeded")
	}
	err = b.Platform.Router.Tx(tenanttest.Ctx(other), func(tx pgx.Tx) error {
		st, err := readState(context.Background(), tx)
		if err != nil {
			return err
		}
		if st.tenant != other.ID.String() || st.role != b.AppRole {
			t.Errorf("after a cancelled transaction, the next one holds %+v", st)
		}
		ids, err := collect(tx.Query(context.Background(), `SELECT tenant_id FROM contacts`))
		for _, id := range ids {
			if id != other.ID {
				t.Errorf("%s sees a row of %s", other.Slug, id)
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("the next transaction failed: %v", err)
	}
}

// TestConcurrentTenants runs many goroutines of many tenants at once over a
// small pool, each writing and reading its own rows.
func TestConcurrentTenants(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 2, MaxConnsPerServer: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 24 {
		tn := b.Tenants[g%len(b.Tenants)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
					ctx := context.Background()
					if _, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, fmt.Sprintf("g%d-%d", g, i)); err != nil {
						return err
					}
					ids, err := collect(tx.Query(ctx, `SELECT tenant_id FROM companies`))
					if err != nil {
						return err
					}
					for _, id := range ids {
						if id != tn.ID {
							return fmt.Errorf("%s saw a row of %s", tn.Slug, id)
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, tn := range b.Tenants {
		var n int
		err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			return tx.QueryRow(context.Background(), `SELECT count(*) FROM companies`).Scan(&n)
		})
		if err != nil || n != 4*15 {
			t.Errorf("%s has %d companies (%v), want %d", tn.Slug, n, err, 4*15)
		}
	}
	if st := b.Platform.Router.Stats(b.ServerNames[0]); st.Open > 4 {
		t.Errorf("the router held %d connections, over its budget of 4", st.Open)
	}
}

// TestCachedPlanAcrossSchemas: two schema tenants whose tables differ (as in
// the middle of a fleet migration) share one pooled connection; pgx's cached
// statement would fail with "cached plan must not change result type" unless
// the router handles it.
func TestCachedPlanAcrossSchemas(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 1})
	a := b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0])
	c := b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0])
	seed(t, b, a)
	seed(t, b, c)
	admin := b.AdminConn(t, c)
	if _, err := admin.Exec(context.Background(), `ALTER TABLE `+qualified(c, "companies")+` ADD COLUMN employees integer`); err != nil {
		t.Fatal(err)
	}
	for i, tn := range []*tenancy.Tenant{a, c, a, c} {
		err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			rows, err := tx.Query(context.Background(), `SELECT * FROM companies`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
			}
			return rows.Err()
		})
		if err != nil {
			t.Fatalf("query %d (%s): %v", i, tn.Slug, err)
		}
	}
}

// TestDatabaseCatalog checks PostgreSQL's own catalogs: every table with
// tenant_id has Row-Level Security enabled and forced and a policy with USING
// and WITH CHECK, and the application role is no superuser, cannot bypass RLS
// and owns nothing.
func TestDatabaseCatalog(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	seen := map[string]bool{}
	for _, tn := range b.Tenants {
		conn := b.AdminConn(t, tn)
		ctx := context.Background()
		if seen[tn.Placement.Server+"/"+tn.Placement.Database] {
			continue
		}
		seen[tn.Placement.Server+"/"+tn.Placement.Database] = true
		rows, err := conn.Query(ctx, `
			SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity,
			       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL
			               AND p.polcmd = '*' AND p.polpermissive)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)`)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for rows.Next() {
			var name string
			var rls, force, policy bool
			if err := rows.Scan(&name, &rls, &force, &policy); err != nil {
				t.Fatal(err)
			}
			count++
			if !rls || !force || !policy {
				t.Errorf("%s: rls enabled %v, forced %v, policy with USING and WITH CHECK %v", name, rls, force, policy)
			}
		}
		if rows.Err() != nil || count == 0 {
			t.Errorf("%s: found %d tenant tables (%v)", tn.Placement.Database, count, rows.Err())
		}
		var super, bypass bool
		var owns int
		err = conn.QueryRow(ctx, `
			SELECT r.rolsuper, r.rolbypassrls,
			  (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
			  + (SELECT count(*) FROM pg_database WHERE datdba = r.oid) + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
			FROM pg_roles r WHERE r.rolname = $1`, b.AppRole).Scan(&super, &bypass, &owns)
		if err != nil {
			t.Fatal(err)
		}
		if super || bypass || owns != 0 {
			t.Errorf("application role: superuser %v, bypassrls %v, owns %d objects", super, bypass, owns)
		}
	}
}

var _ = uuid.Nil

// TestSessionStateDoesNotCarryOver: SQL in one tenant's transaction changes
// session-level state on purpose (a role, an actor, the transaction mode, an
// advisory lock); the next tenant's transaction on the same backend must start
// clean.
func TestSessionStateDoesNotCarryOver(t *testing.T) {
	t.Parallel()
	testSessionState(t, &tenanttest.Opts{MaxConnsPerServer: 1})
}

// TestSessionStateBehindPgBouncer: the same through PgBouncer in transaction
// mode, where the backend is shared by every client connection.
func TestSessionStateBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testSessionState(t, &tenanttest.Opts{MaxConnsPerServer: 2, PgBouncer: true})
}

func testSessionState(t *testing.T, opts *tenanttest.Opts) {
	b := tenanttest.Setup(t, opts)
	server := b.ServerNames[0]
	a := b.CreateTenant(t, tenancy.ModelShared, server)
	other := b.CreateTenant(t, tenancy.ModelSchema, server)
	next := b.CreateTenant(t, tenancy.ModelShared, server)
	for _, tn := range []*tenancy.Tenant{a, other, next} {
		seed(t, b, tn)
	}
	var pid int32
	err := b.Platform.Router.Tx(tenanttest.Ctx(a), func(tx pgx.Tx) error {
		ctx := context.Background()
		for _, s := range []string{
			`SET app.actor = 'user:forged'`,
			`SET app.client_ip = '6.6.6.6'`,
			`SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`,
			`SELECT pg_advisory_lock(42)`,
			`SET lock_timeout = '12345ms'`,
			`SET search_path = ` + dataplane.Ident(other.Placement.Schema),
			`SET ROLE ` + other.Role(),
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid)
	})
	if err != nil {
		t.Fatalf("tenant A's session-level changes: %v", err)
	}
	// The prelude holds one advisory lock in share mode, the tenant's move
	// fence (see fence.go); any other is left over.
	err = b.Platform.Router.Tx(tenanttest.Ctx(next), func(tx pgx.Tx) error {
		ctx := context.Background()
		var p int32
		var user, actor, ip, readOnly, lockTimeout string
		var locks int
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid(), current_user, current_setting('app.actor'), current_setting('app.client_ip'),
			current_setting('transaction_read_only'), current_setting('lock_timeout'), (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND mode <> 'ShareLock')`).
			Scan(&p, &user, &actor, &ip, &readOnly, &lockTimeout, &locks); err != nil {
			return err
		}
		if p != pid {
			t.Fatalf("backend %d, want the reused %d", p, pid)
		}
		if user != b.AppRole || actor != "" || ip != "" || readOnly != "off" || lockTimeout != "0" || locks != 0 {
			t.Errorf("the next tenant's transaction inherited: user %s, actor %q, client ip %q, read only %s, lock_timeout %s, advisory locks %d",
				user, actor, ip, readOnly, lockTimeout, locks)
		}
		ids, err := collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
		if err != nil {
			return err
		}
		if len(ids) != 2 {
			t.Errorf("the next tenant sees %d contacts, want its 2", len(ids))
		}
		_, err = tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'still writable')`, next.ID)
		return err
	})
	if err != nil {
		t.Fatalf("the next tenant's transaction: %v", err)
	}
}
