package router_test

// The isolation suite: tenant A must never read, update, delete or insert
// tenant B's rows, whatever SQL runs inside A's transaction, in every pair of
// isolation models, on one server and across two.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// seed gives a tenant one company and two contacts through the router.
func seed(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant) {
	t.Helper()
	err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		var company int64
		if err := tx.QueryRow(context.Background(), `INSERT INTO companies (tenant_id, name) VALUES ($1, $2) RETURNING id`,
			tn.ID, tn.Slug+" inc").Scan(&company); err != nil {
			return err
		}
		for i := range 2 {
			if _, err := tx.Exec(context.Background(), `INSERT INTO contacts (tenant_id, company_id, name, email) VALUES ($1, $2, $3, $4)`,
				tn.ID, company, fmt.Sprintf("%s person %d", tn.Slug, i), fmt.Sprintf("p%d@%s.test", i, tn.Slug)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed %s: %v", tn.Slug, err)
	}
}

// fingerprint reads every row of a tenant's tables as the superuser, bypassing
// every protection: what the tenant really has.
func fingerprint(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant) string {
	t.Helper()
	conn := b.AdminConn(t, tn)
	var sb strings.Builder
	for _, table := range []string{"companies", "contacts", "deals"} {
		var all string
		err := conn.QueryRow(context.Background(), fmt.Sprintf(
			`SELECT coalesce(string_agg(x::text, ';' ORDER BY x::text), '') FROM %s x WHERE tenant_id = $1`,
			dataplane.Ident(tn.Placement.Schema, table)), tn.ID).Scan(&all)
		if err != nil {
			t.Fatalf("fingerprint %s.%s: %v", tn.Slug, table, err)
		}
		fmt.Fprintf(&sb, "%s[%s]", table, all)
	}
	return sb.String()
}

// attack is raw SQL run as the application role inside A's transaction. It
// must either fail or return/affect only A's rows.
type attack struct {
	name string
	// applies reports whether the attack makes sense for this pair.
	applies func(a, b *tenancy.Tenant) bool
	// run returns the tenant_id of every row it saw or changed.
	run func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error)
}

func always(a, b *tenancy.Tenant) bool { return true }

// sameDatabase: b's tables can be named from a's connection.
func sameDatabase(a, b *tenancy.Tenant) bool {
	return a.Placement.Server == b.Placement.Server && a.Placement.Database == b.Placement.Database
}

func collect(rows pgx.Rows, err error) ([]uuid.UUID, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}

// breachUnless reports a write that should have been refused as reaching b.
func breachUnless(err error, b *tenancy.Tenant) ([]uuid.UUID, error) {
	if err != nil {
		return nil, err
	}
	return []uuid.UUID{b.ID}, nil
}

func qualified(tn *tenancy.Tenant, table string) string {
	return dataplane.Ident(tn.Placement.Schema, table)
}

var attacks = []attack{
	{"select without where", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
	}},
	{"select where tenant_id is B", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts WHERE tenant_id = $1`, b.ID))
	}},
	{"update without where", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `UPDATE contacts SET name = name || ' (seen)' RETURNING tenant_id`))
	}},
	{"update B's rows", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `UPDATE contacts SET name = 'pwned' WHERE tenant_id = $1 RETURNING tenant_id`, b.ID))
	}},
	{"move own row to B", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `UPDATE deals SET tenant_id = $1 RETURNING tenant_id`, b.ID))
	}},
	{"delete B's rows", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `DELETE FROM contacts WHERE tenant_id = $1 RETURNING tenant_id`, b.ID))
	}},
	{"insert with B's tenant_id", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'planted') RETURNING tenant_id`, b.ID))
	}},
	// Without RETURNING, only the policy's WITH CHECK stands between the
	// statement and B's data (RETURNING also applies the USING clause).
	{"insert with B's tenant_id, no RETURNING", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'planted')`, b.ID)
		return breachUnless(err, b)
	}},
	{"move own row to B, no RETURNING", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		tag, err := tx.Exec(ctx, `UPDATE deals SET tenant_id = $1`, b.ID)
		if err == nil && tag.RowsAffected() == 0 {
			return nil, nil
		}
		return breachUnless(err, b)
	}},
	{"schema-qualified select", sameDatabase, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `SELECT tenant_id FROM `+qualified(b, "contacts")))
	}},
	{"schema-qualified insert", sameDatabase, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		return collect(tx.Query(ctx, `INSERT INTO `+qualified(b, "companies")+` (tenant_id, name) VALUES ($1, 'planted') RETURNING tenant_id`, b.ID))
	}},
	{"schema-qualified insert as A", sameDatabase, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		ids, err := collect(tx.Query(ctx, `INSERT INTO `+qualified(b, "companies")+` (tenant_id, name) VALUES ($1, 'planted') RETURNING tenant_id`, a.ID))
		if err == nil && a.Placement.Schema != b.Placement.Schema {
			return []uuid.UUID{b.ID}, nil // A's row planted in B's storage is a breach too
		}
		return ids, err
	}},
	{"set_config tenant to B", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, b.ID.String()); err != nil {
			return nil, err
		}
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
	}},
	{"set_config tenant to B, session level", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, false)`, b.ID.String()); err != nil {
			return nil, err
		}
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
	}},
	{"reset tenant setting", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		if _, err := tx.Exec(ctx, `RESET app.tenant_id`); err != nil {
			return nil, err
		}
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
	}},
	{"reset signature", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		if _, err := tx.Exec(ctx, `RESET app.tenant_sig`); err != nil {
			return nil, err
		}
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
	}},
	{"reset role, read B's schema", sameDatabase, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		if _, err := tx.Exec(ctx, `RESET ROLE`); err != nil {
			return nil, err
		}
		return collect(tx.Query(ctx, `SELECT tenant_id FROM `+qualified(b, "contacts")))
	}},
	{"set role to B's role", func(a, b *tenancy.Tenant) bool { return sameDatabase(a, b) && b.Model != tenancy.ModelShared },
		func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, b.Role()); err != nil {
				return nil, err
			}
			return collect(tx.Query(ctx, `SELECT tenant_id FROM `+qualified(b, "contacts")))
		}},
	{"set role to B's role and plant a row", func(a, b *tenancy.Tenant) bool { return sameDatabase(a, b) && b.Model != tenancy.ModelShared },
		func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, b.Role()); err != nil {
				return nil, err
			}
			_, err := tx.Exec(ctx, `INSERT INTO `+qualified(b, "companies")+` (tenant_id, name) VALUES ($1, 'planted')`, a.ID)
			if err == nil {
				return []uuid.UUID{b.ID}, nil
			}
			return nil, err
		}},
	{"search_path to B's schema", sameDatabase, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true)`, dataplane.Ident(b.Placement.Schema)); err != nil {
			return nil, err
		}
		return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
	}},
	{"B's tenant and B's role and A's signature", func(a, b *tenancy.Tenant) bool { return sameDatabase(a, b) },
		func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true), set_config('search_path', $2, true)`,
				b.ID.String(), dataplane.Ident(b.Placement.Schema)); err != nil {
				return nil, err
			}
			if b.Model != tenancy.ModelShared {
				if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, b.Role()); err != nil {
					return nil, err
				}
			}
			return collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
		}},
	{"create a temporary table to shadow contacts", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		// A temporary table outlives the transaction on the pooled connection
		// and would catch the next tenant's unqualified reads and writes.
		if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE contacts (tenant_id uuid, name text)`); err != nil {
			return nil, err
		}
		return []uuid.UUID{b.ID}, nil
	}},
	{"read the platform key", always, func(ctx context.Context, tx pgx.Tx, a, b *tenancy.Tenant) ([]uuid.UUID, error) {
		var key []byte
		if err := tx.QueryRow(ctx, `SELECT ipad FROM tenancy.key`).Scan(&key); err != nil {
			return nil, err
		}
		return []uuid.UUID{b.ID}, nil // reading the key at all is a breach
	}},
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	for _, servers := range []int{1, 2} {
		t.Run(fmt.Sprintf("Servers%d", servers), func(t *testing.T) {
			t.Parallel()
			testIsolation(t, &tenanttest.Opts{Servers: servers, PerModel: 2})
		})
	}
}

// TestIsolationBehindPgBouncer runs the suite with PgBouncer in transaction
// mode between the router and the server, where schema-per-tenant libraries
// lose their search_path and read across tenants.
func TestIsolationBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testIsolation(t, &tenanttest.Opts{PerModel: 2, PgBouncer: true})
}

func testIsolation(t *testing.T, opts *tenanttest.Opts) {
	b := tenanttest.Setup(t, opts)
	for _, tn := range b.Tenants {
		seed(t, b, tn)
	}
	for _, a := range b.Tenants {
		for _, victim := range b.Tenants {
			if a == victim {
				continue
			}
			name := fmt.Sprintf("%s(%s)Attacks%s(%s)", a.Model, a.Slug, victim.Model, victim.Slug)
			t.Run(name, func(t *testing.T) {
				before := fingerprint(t, b, victim)
				for _, at := range attacks {
					if !at.applies(a, victim) {
						continue
					}
					var seen []uuid.UUID
					err := b.Platform.Router.Tx(tenanttest.Ctx(a), func(tx pgx.Tx) error {
						var err error
						seen, err = at.run(context.Background(), tx, a, victim)
						return err
					})
					if err != nil {
						continue // refused: fine
					}
					for _, id := range seen {
						if id != a.ID {
							t.Errorf("%s: tenant %s reached a row of tenant %s", at.name, a.Slug, id)
						}
					}
				}
				if after := fingerprint(t, b, victim); after != before {
					t.Errorf("tenant %s's rows changed under attacks from %s:\nbefore %s\nafter  %s", victim.Slug, a.Slug, before, after)
				}
			})
		}
	}
}

func TestIsolationAttacksCanSucceed(t *testing.T) {
	// The attacks must be able to fail the suite: run as the superuser, which
	// bypasses every protection, they reach the victim's rows.
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	a, victim := b.Tenants[0], b.Tenants[0]
	victim = b.CreateTenant(t, tenancy.ModelShared, b.ServerNames[0])
	seed(t, b, a)
	seed(t, b, victim)
	conn := b.AdminConn(t, a)
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL search_path = shared`); err != nil {
		t.Fatal(err)
	}
	ids, err := attacks[1].run(ctx, tx, a, victim)
	if err != nil || len(ids) == 0 || ids[0] != victim.ID {
		t.Fatalf("select where tenant_id is B as superuser: got %v, %v; want B's rows", ids, err)
	}
}

func TestNoTenantFailsBeforeSQL(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	called := false
	err := b.Platform.Router.Tx(context.Background(), func(tx pgx.Tx) error { called = true; return nil })
	if !errors.Is(err, tenancy.ErrNoTenant) {
		t.Fatalf("Tx without a tenant: got %v, want ErrNoTenant", err)
	}
	if called {
		t.Fatal("fn ran without a tenant")
	}
	if st := b.Platform.Router.Stats(b.ServerNames[0]); st.Open != 0 || st.Dials != 0 {
		t.Fatalf("a connection was opened without a tenant: %+v", st)
	}
}
