package router_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

// TestFirstStatementRunsInsideTheTenant runs the same first statement several
// times on one connection, so that it goes once after the prelude alone
// (unprepared) and then in one pipeline with it (prepared), through every way
// a transaction can start: each time it must see the tenant's settings and
// role, never the bare session.
func TestFirstStatementRunsInsideTheTenant(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 1})
	server := b.ServerNames[0]
	tenants := []*tenancy.Tenant{
		b.CreateTenant(t, tenancy.ModelShared, server),
		b.CreateTenant(t, tenancy.ModelSchema, server),
		b.CreateTenant(t, tenancy.ModelDatabase, server),
	}
	const q = `SELECT current_setting('app.tenant_id', true), current_user, $1::int`
	type result struct{ tenant, user string }
	starts := map[string]func(ctx context.Context, tx pgx.Tx) (result, error){
		"QueryRow": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			var n int
			err = tx.QueryRow(ctx, q, 1).Scan(&r.tenant, &r.user, &n)
			return r, err
		},
		"Query": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			rows, err := tx.Query(ctx, q, 2)
			if err != nil {
				return r, err
			}
			var n int
			for rows.Next() {
				err = rows.Scan(&r.tenant, &r.user, &n)
			}
			if err == nil {
				err = rows.Err()
			}
			return r, err
		},
		"QuerySimpleProtocol": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			var n int
			err = tx.QueryRow(ctx, q, pgx.QueryExecModeSimpleProtocol, 3).Scan(&r.tenant, &r.user, &n)
			return r, err
		},
		"Exec": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.probe', current_setting('app.tenant_id', true) || ' ' || current_user, true), $1::int`, 4); err != nil {
				return r, err
			}
			var s string
			err = tx.QueryRow(ctx, `SELECT current_setting('app.probe')`).Scan(&s)
			r.tenant, r.user, _ = strings.Cut(s, " ")
			return r, err
		},
		"ExecWithoutArguments": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			// pgx sends it with the simple protocol: two statements in one.
			if _, err := tx.Exec(ctx, `SELECT 1; SELECT set_config('app.probe', current_setting('app.tenant_id', true) || ' ' || current_user, true)`); err != nil {
				return r, err
			}
			var s string
			err = tx.QueryRow(ctx, `SELECT current_setting('app.probe')`).Scan(&s)
			r.tenant, r.user, _ = strings.Cut(s, " ")
			return r, err
		},
		"SendBatch": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			batch := &pgx.Batch{}
			batch.Queue(q, 5).QueryRow(func(row pgx.Row) error {
				var n int
				return row.Scan(&r.tenant, &r.user, &n)
			})
			return r, tx.SendBatch(ctx, batch).Close()
		},
		"Conn": func(ctx context.Context, tx pgx.Tx) (r result, err error) {
			var n int
			err = tx.Conn().QueryRow(ctx, q, 6).Scan(&r.tenant, &r.user, &n)
			return r, err
		},
	}
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			for _, tn := range tenants {
				wantUser := b.AppRole
				if tn.Model != tenancy.ModelShared {
					wantUser = tn.Role()
				}
				for i := range 3 {
					var got result
					err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) (err error) {
						got, err = start(context.Background(), tx)
						return err
					})
					if err != nil {
						t.Fatalf("%s tenant, run %d: %v", tn.Model, i, err)
					}
					if got.tenant != tn.ID.String() || got.user != wantUser {
						t.Errorf("%s tenant, run %d: the first statement saw tenant %q as %q, want %q as %q",
							tn.Model, i, got.tenant, got.user, tn.ID, wantUser)
					}
				}
			}
		})
	}
}

// TestFailedPreludeRunsNothing breaks the prelude (the tenant's role is gone)
// and proves the statement queued behind it in the same pipeline never ran,
// and that the next transaction on the server works.
func TestFailedPreludeRunsNothing(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 1})
	server := b.ServerNames[0]
	victim := b.CreateTenant(t, tenancy.ModelSchema, server)
	other := b.CreateTenant(t, tenancy.ModelSchema, server)
	r := b.Platform.Router
	insert := func(tn *tenancy.Tenant, name string) error {
		return r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			_, err := tx.Exec(context.Background(), `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, name)
			return err
		})
	}
	// Twice, so that the INSERT is prepared on the connection and the third
	// goes in one pipeline after the prelude.
	for range 2 {
		if err := insert(victim, "before"); err != nil {
			t.Fatal(err)
		}
	}
	admin := b.AdminConn(t, victim)
	ctx := context.Background()
	// A role cannot be dropped while it has rights; take them away first.
	if _, err := admin.Exec(ctx, `REASSIGN OWNED BY `+dataplane.Ident(victim.Role())+` TO CURRENT_USER; DROP OWNED BY `+dataplane.Ident(victim.Role())+`; DROP ROLE `+dataplane.Ident(victim.Role())); err != nil {
		t.Fatal(err)
	}
	err := insert(victim, "after")
	if err == nil || !strings.Contains(err.Error(), "begin tenant transaction") {
		t.Fatalf("insert with a broken prelude: %v, want an error from the prelude", err)
	}
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM `+dataplane.Ident(victim.Placement.Schema, "companies")+` WHERE name = 'after'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the statement behind a failed prelude ran: %d rows", n)
	}
	if err := insert(other, "still works"); err != nil {
		t.Errorf("the next tenant after a failed prelude: %v", err)
	}
}

// TestTxSemantics covers what a pgx.Tx promises besides statements:
// savepoints, commit and rollback without statements, ErrTxClosed, and the
// refused features.
func TestTxSemantics(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	r := b.Platform.Router
	for _, tn := range b.Tenants {
		t.Run(string(tn.Model), func(t *testing.T) {
			ctx := context.Background()
			tctx := tenanttest.Ctx(tn)
			count := func(name string) int {
				var n int
				err := r.Tx(tctx, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, `SELECT count(*) FROM companies WHERE name = $1`, name).Scan(&n)
				})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			err := r.Tx(tctx, func(tx pgx.Tx) error {
				add := func(q pgx.Tx, name string) error {
					_, err := q.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, name)
					return err
				}
				sp, err := tx.Begin(ctx)
				if err != nil {
					return err
				}
				if err := add(sp, "undone"); err != nil {
					return err
				}
				if err := sp.Rollback(ctx); err != nil {
					return err
				}
				if err := sp.Commit(ctx); !errors.Is(err, pgx.ErrTxClosed) {
					t.Errorf("commit of a rolled back savepoint: %v, want ErrTxClosed", err)
				}
				sp, err = tx.Begin(ctx)
				if err != nil {
					return err
				}
				if err := add(sp, "kept"); err != nil {
					return err
				}
				// A failing statement inside a savepoint does not doom the
				// transaction once rolled back to it.
				inner, err := sp.Begin(ctx)
				if err != nil {
					return err
				}
				if _, err := inner.Exec(ctx, `SELECT 1/0`); err == nil {
					t.Error("division by zero succeeded")
				}
				if err := inner.Rollback(ctx); err != nil {
					return err
				}
				return sp.Commit(ctx)
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := count("undone"); got != 0 {
				t.Errorf("a rolled back savepoint's row is there (%d)", got)
			}
			if got := count("kept"); got != 1 {
				t.Errorf("a released savepoint's row: %d, want 1", got)
			}
			// No statement: nothing is sent, and Commit and Rollback work.
			var tx pgx.Tx
			if err := r.Tx(tctx, func(t pgx.Tx) error { tx = t; return nil }); err != nil {
				t.Errorf("empty transaction: %v", err)
			}
			if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxClosed) {
				t.Errorf("commit after the router committed: %v, want ErrTxClosed", err)
			}
			if _, err := tx.Exec(ctx, `SELECT 1`); !errors.Is(err, pgx.ErrTxClosed) {
				t.Errorf("statement after the transaction ended: %v, want ErrTxClosed", err)
			}
			func() {
				defer func() {
					if p := recover(); p == nil || !strings.Contains(p.(string), "large objects") {
						t.Errorf("LargeObjects: recovered %v, want a panic that names large objects", p)
					}
				}()
				_ = r.Tx(tctx, func(tx pgx.Tx) error { tx.LargeObjects(); return nil })
			}()
		})
	}
}

// TestIsolationLevelIsChecked: the isolation level goes into BEGIN's text, so
// anything but the four levels is refused before any SQL.
func TestIsolationLevelIsChecked(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	tn := b.Tenants[0]
	ran := false
	err := b.Platform.Router.TxWith(tenanttest.Ctx(tn), &router.TxOpts{IsoLevel: "serializable; DROP TABLE contacts"}, func(tx pgx.Tx) error {
		ran = true
		return nil
	})
	tenanttest.WantCode(t, "hostile isolation level", err, tenancy.CodeInvalid)
	if ran {
		t.Error("the function ran with a hostile isolation level")
	}
	for _, level := range []pgx.TxIsoLevel{pgx.Serializable, pgx.RepeatableRead, pgx.ReadCommitted, pgx.ReadUncommitted} {
		var got string
		err := b.Platform.Router.TxWith(tenanttest.Ctx(tn), &router.TxOpts{IsoLevel: level, ReadOnly: true}, func(tx pgx.Tx) error {
			return tx.QueryRow(context.Background(), `SELECT current_setting('transaction_isolation') || ' ' || current_setting('transaction_read_only')`).Scan(&got)
		})
		if err != nil {
			t.Fatalf("%s: %v", level, err)
		}
		if want := strings.ToLower(string(level)) + " on"; got != want {
			t.Errorf("isolation %s: the transaction says %q, want %q", level, got, want)
		}
	}
}

// flipResolver resolves a tenant as active until it is invalidated, and as
// suspended afterwards: a tenant suspended while a move was taking it away.
type flipResolver struct {
	mu      sync.Mutex
	tn      *tenancy.Tenant
	flipped bool
}

func (f *flipResolver) ResolveID(ctx context.Context, id uuid.UUID) (*tenancy.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := *f.tn
	if f.flipped {
		t.Status = tenancy.StatusSuspended
	}
	return &t, nil
}

func (f *flipResolver) Invalidate(uuid.UUID) {
	f.mu.Lock()
	f.flipped = true
	f.mu.Unlock()
}

// TestMovedAwayAndNotServable: a transaction refused at a placement the
// tenant has left, whose tenant the catalog no longer serves, ends with the
// catalog's reason (suspended), not a panic.
func TestMovedAwayAndNotServable(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	tn := b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0])
	ctx := context.Background()
	admin := b.AdminConn(t, tn)
	err := pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
		if err := dataplane.EnsureFence(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO tenancy.moved (tenant, schema, placement, move_id) VALUES ($1, $2, 'pg9/elsewhere/tenant', 1)`,
			tn.ID, tn.Placement.Schema)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := b.Platform.Catalog.TenantKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Config{Resolver: &flipResolver{tn: tn}, Servers: b.Platform.Catalog, Key: key, AppRole: b.AppRole})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	err = r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	})
	tenanttest.WantCode(t, "a transaction of a tenant moved away and suspended", err, tenancy.CodeSuspended)
}
