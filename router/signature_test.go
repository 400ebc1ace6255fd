package router_test

import (
	"context"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

var sigPattern = regexp.MustCompile(`app\.tenant_sig', '([0-9a-f]{64})'`)

// TestStolenSignature: every router connection logs in as the application
// role, and a role can read the text of its own other sessions' queries in
// pg_stat_activity — which would include tenant B's BEGIN with its signed
// tenant setting. The application role's activity tracking is off, so A must
// find nothing; and a signature found anyway is bound to B's backend, so
// replaying it on A's connection must fail.
func TestStolenSignature(t *testing.T) {
	t.Parallel()
	for _, model := range tenancy.Models {
		t.Run(string(model), func(t *testing.T) {
			t.Parallel()
			b := tenanttest.Setup(t, &tenanttest.Opts{MaxConnsPerServer: 4})
			server := b.ServerNames[0]
			a := b.CreateTenant(t, tenancy.ModelShared, server)
			victim := b.CreateTenant(t, model, server)
			seed(t, b, a)
			seed(t, b, victim)

			inTx, release := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			go func() {
				done <- b.Platform.Router.Tx(tenanttest.Ctx(victim), func(tx pgx.Tx) error {
					close(inTx) // idle in transaction: the BEGIN is its last query
					<-release
					return nil
				})
			}()
			<-inTx
			defer func() { close(release); <-done }()

			var stolen string
			err := b.Platform.Router.Tx(tenanttest.Ctx(a), func(tx pgx.Tx) error {
				ctx := context.Background()
				rows, err := tx.Query(ctx, `SELECT query FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%'`, victim.ID.String())
				if err != nil {
					return err
				}
				queries, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				for _, q := range queries {
					if m := sigPattern.FindStringSubmatch(q); m != nil {
						stolen = m[1]
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("read pg_stat_activity: %v", err)
			}
			if stolen != "" {
				t.Errorf("tenant %s read tenant %s's signed BEGIN in pg_stat_activity", a.Slug, victim.Slug)
			} else {
				return
			}
			if victim.Placement.Database != a.Placement.Database {
				return // the stolen signature is only usable in the victim's database, which A cannot reach
			}
			err = b.Platform.Router.Tx(tenanttest.Ctx(a), func(tx pgx.Tx) error {
				ctx := context.Background()
				if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true), set_config('app.tenant_sig', $2, true),
					set_config('search_path', $3, true)`, victim.ID.String(), stolen, dataplane.Ident(victim.Placement.Schema)); err != nil {
					return err
				}
				if victim.Model != tenancy.ModelShared {
					if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, victim.Role()); err != nil {
						return err
					}
				}
				var n int
				return tx.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&n)
			})
			if err == nil {
				t.Fatalf("a signature stolen from pg_stat_activity let tenant %s read tenant %s's rows", a.Slug, victim.Slug)
			}
		})
	}
}

// TestSignatureBoundToBackend: B's own, valid signature, taken from B's
// transaction on one backend (as a leak would get it), does not work in A's
// transaction on another backend.
func TestSignatureBoundToBackend(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	server := b.ServerNames[0]
	a := b.CreateTenant(t, tenancy.ModelShared, server)
	victim := b.CreateTenant(t, tenancy.ModelShared, server)
	seed(t, b, a)
	seed(t, b, victim)
	key, err := b.Platform.Catalog.TenantKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var victimSig string
	var victimPid uint32
	inTx, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- b.Platform.Router.Tx(tenanttest.Ctx(victim), func(tx pgx.Tx) error {
			err := tx.QueryRow(context.Background(), `SELECT current_setting('app.tenant_sig'), pg_backend_pid()`).Scan(&victimSig, &victimPid)
			close(inTx) // hold this backend, so that A's transaction runs on another
			<-release
			return err
		})
	}()
	<-inTx
	err = b.Platform.Router.Tx(tenanttest.Ctx(a), func(tx pgx.Tx) error {
		ctx := context.Background()
		var pid uint32
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			return err
		}
		if pid == victimPid {
			t.Fatal("A's transaction runs on B's backend")
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true), set_config('app.tenant_sig', $2, true)`,
			victim.ID.String(), victimSig); err != nil {
			return err
		}
		var n int
		return tx.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&n)
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err == nil {
		t.Fatalf("B's signature from another backend let tenant %s read tenant %s's rows", a.Slug, victim.Slug)
	}
	// The same forgery with the right backend works: the test can fail.
	err = b.Platform.Router.Tx(tenanttest.Ctx(a), func(tx pgx.Tx) error {
		ctx := context.Background()
		var pid uint32
		if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true), set_config('app.tenant_sig', $2, true)`,
			victim.ID.String(), router.Sign(key, victim.ID, pid)); err != nil {
			return err
		}
		ids, err := collect(tx.Query(ctx, `SELECT tenant_id FROM contacts`))
		if err == nil && (len(ids) == 0 || ids[0] != victim.ID) {
			t.Errorf("with the key, the forgery should reach B's rows; got %v", ids)
		}
		return err
	})
	if err != nil {
		t.Fatalf("forgery with the key: %v", err)
	}
}
