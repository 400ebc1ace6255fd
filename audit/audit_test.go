package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// tx runs fn as tn through the router, with an actor and a request id.
func tx(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant, opts *router.TxOpts, fn func(ctx context.Context, tx pgx.Tx) error) error {
	t.Helper()
	ctx := tenancy.WithActor(tenanttest.Ctx(tn), tenancy.Actor{Kind: "user", ID: "u1"})
	ctx = tenancy.WithRequestID(ctx, "req-1")
	return b.Platform.Router.TxWith(ctx, opts, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

func count(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant, opts *router.TxOpts, where string) int {
	t.Helper()
	var n int
	err := tx(t, b, tn, opts, func(ctx context.Context, tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM companies WHERE `+where).Scan(&n)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func entries(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant, opts *audit.ListOpts) []audit.Entry {
	t.Helper()
	var es []audit.Entry
	err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) (err error) {
		es, _, err = audit.List(ctx, tx, tn.Placement.Schema, tn.ID, opts)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func verify(t *testing.T, b *tenanttest.Bundle, tn *tenancy.Tenant) *audit.Verification {
	t.Helper()
	v, err := audit.Verify(context.Background(), b.AdminConn(t, tn), tn.Placement.Schema, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSoftDeleteAndAudit, in every model: a DELETE hides the row and keeps it,
// restore brings it back, a deleted value can be used again, and every step
// is in the tenant's audit log with who and from where; the chain verifies.
func TestSoftDeleteAndAudit(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	for _, tn := range b.Tenants {
		t.Run(string(tn.Model), func(t *testing.T) {
			var id int64
			err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
				if err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'Acme') RETURNING id`, tn.ID).Scan(&id); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `UPDATE companies SET name = 'Acme Corp' WHERE id = $1`, id)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			err = tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM companies WHERE id = $1`, id)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := count(t, b, tn, nil, "true"); n != 0 {
				t.Errorf("a deleted company is still listed (%d)", n)
			}
			if n := count(t, b, tn, &router.TxOpts{IncludeDeleted: true}, "deleted_at IS NOT NULL"); n != 1 {
				t.Errorf("the deleted company is not kept: %d with IncludeDeleted", n)
			}
			err = tx(t, b, tn, &router.TxOpts{IncludeDeleted: true}, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `UPDATE companies SET deleted_at = NULL WHERE id = $1`, id)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := count(t, b, tn, nil, "name = 'Acme Corp'"); n != 1 {
				t.Errorf("restore: %d companies, want the one", n)
			}

			es := entries(t, b, tn, &audit.ListOpts{Table: "companies"})
			var ops []string
			for _, e := range es {
				ops = append(ops, e.Op)
				if e.Actor != "user:u1" || e.RequestID != "req-1" {
					t.Errorf("entry %d: actor %q, request id %q", e.Seq, e.Actor, e.RequestID)
				}
			}
			if got := strings.Join(ops, " "); got != "insert update delete restore" {
				t.Errorf("operations logged: %q", got)
			}
			if len(es) == 4 && !strings.Contains(string(es[1].Changes), `"name": {"new": "Acme Corp", "old": "Acme"}`) {
				t.Errorf("the update's changes: %s", es[1].Changes)
			}
			if v := verify(t, b, tn); !v.OK || !v.HeadChecked {
				t.Errorf("verify: %+v", v)
			}

			// The e-mail of a deleted contact can be used again.
			addContact := func() error {
				return tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'Ada', 'ada@example.test')`, tn.ID)
					return err
				})
			}
			if err := addContact(); err != nil {
				t.Fatal(err)
			}
			if err := addContact(); err == nil {
				t.Error("a duplicate e-mail of a live contact was accepted")
			}
			err = tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `DELETE FROM contacts WHERE email = 'ada@example.test'`)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := addContact(); err != nil {
				t.Errorf("the e-mail of a deleted contact cannot be used again: %v", err)
			}
		})
	}
}

// TestAppRoleCannotEraseOrForge: raw SQL as the application role cannot
// hard-delete tenant rows (not even by claiming a purge) nor change, remove or
// add audit entries or touch the chain head.
func TestAppRoleCannotEraseOrForge(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	for _, tn := range b.Tenants {
		t.Run(string(tn.Model), func(t *testing.T) {
			err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'Keep')`, tn.ID)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			attacks := []string{
				`SELECT set_config('tenancy.purge', 'tenant', true); DELETE FROM companies`,
				`SET session_replication_role = replica; DELETE FROM companies`,
				`ALTER TABLE companies DISABLE TRIGGER tenancy_soft_delete; DELETE FROM companies`,
				`TRUNCATE companies`,
				`UPDATE tenancy_audit SET actor = 'someone else'`,
				`DELETE FROM tenancy_audit`,
				`INSERT INTO tenancy_audit (tenant_id, table_name, row_key, op, changes) VALUES ('` + tn.ID.String() + `', 'x', '{}', 'insert', '{}')`,
				`UPDATE tenancy_audit_head SET seq = 0`,
				`TRUNCATE tenancy_audit`,
			}
			for _, sql := range attacks {
				err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, sql)
					return err
				})
				var pgErr *pgconn.PgError
				if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42501" || strings.HasPrefix(pgErr.Code, "42"))) {
					t.Errorf("%s: unexpected error %v", sql, err)
				}
			}
			var rows, live int
			if err := b.AdminConn(t, tn).QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE deleted_at IS NULL) FROM `+
				dataplane.Ident(tn.Placement.Schema, "companies")+` WHERE tenant_id = $1`, tn.ID).Scan(&rows, &live); err != nil {
				t.Fatal(err)
			}
			if rows != 1 {
				t.Errorf("the row was hard-deleted by the application role (%d rows left)", rows)
			}
			if v := verify(t, b, tn); !v.OK || v.Entries < 1 {
				t.Errorf("the audit log after the attacks: %+v", v)
			}
			for _, e := range entries(t, b, tn, nil) {
				if e.Actor != "user:u1" {
					t.Errorf("entry %d has actor %q", e.Seq, e.Actor)
				}
			}
		})
	}
}

// TestVerifyDetectsTampering alters, removes and reorders entries as the
// owner, who can, and checks that Verify names the first bad entry.
func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	for _, tn := range b.Tenants {
		t.Run(string(tn.Model), func(t *testing.T) {
			for i := range 5 {
				err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, fmt.Sprint("c", i))
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			log := dataplane.Ident(tn.Placement.Schema, dataplane.AuditTable)
			cases := []struct {
				name, tamper, undo string
				first              int64
			}{
				{"Altered", `UPDATE ` + log + ` SET actor = 'nobody' WHERE seq = 3`, `UPDATE ` + log + ` SET actor = 'user:u1' WHERE seq = 3`, 3},
				{"Removed", `CREATE TEMP TABLE saved AS SELECT * FROM ` + log + ` WHERE seq = 2; DELETE FROM ` + log + ` WHERE seq = 2`,
					`INSERT INTO ` + log + ` OVERRIDING SYSTEM VALUE SELECT * FROM saved; DROP TABLE saved`, 3},
				{"Reordered", `UPDATE ` + log + ` SET seq = CASE seq WHEN 2 THEN 4 ELSE 2 END WHERE seq IN (2, 4)`,
					`UPDATE ` + log + ` SET seq = CASE seq WHEN 2 THEN 4 ELSE 2 END WHERE seq IN (2, 4)`, 2},
				{"RemovedAtTheEnd", `CREATE TEMP TABLE saved AS SELECT * FROM ` + log + ` WHERE seq = 5; DELETE FROM ` + log + ` WHERE seq = 5`,
					`INSERT INTO ` + log + ` OVERRIDING SYSTEM VALUE SELECT * FROM saved; DROP TABLE saved`, 5},
			}
			admin := b.AdminConn(t, tn)
			for _, c := range cases {
				if _, err := admin.Exec(context.Background(), c.tamper); err != nil {
					t.Fatal(err)
				}
				if v := verify(t, b, tn); v.OK || v.FirstBad != c.first {
					t.Errorf("%s: verify %+v, want entry %d named", c.name, v, c.first)
				}
				if _, err := admin.Exec(context.Background(), c.undo); err != nil {
					t.Fatal(err)
				}
				if v := verify(t, b, tn); !v.OK {
					t.Fatalf("%s undone: %+v", c.name, v)
				}
			}
		})
	}
}

// TestChainUnderConcurrentWriters: many transactions of one tenant at once;
// the chain has every entry once, in order.
func TestChainUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	tn := b.Tenants[0]
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, fmt.Sprint(w, "-", i))
					return err
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
		t.Fatal(err)
	}
	if v := verify(t, b, tn); !v.OK || v.Entries != writers*each {
		t.Errorf("verify after %d concurrent inserts: %+v", writers*each, v)
	}
}

// TestListFiltersAndPages: filters by table, actor, row and time, and a cursor.
func TestListFiltersAndPages(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	tn := b.Tenants[1]
	var ids []int64
	for i := range 7 {
		err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
			var id int64
			err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2) RETURNING id`, tn.ID, fmt.Sprint("c", i)).Scan(&id)
			ids = append(ids, id)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var all []audit.Entry
	for after := int64(0); ; {
		page := entries(t, b, tn, &audit.ListOpts{Limit: 3, After: after})
		all = append(all, page...)
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].Seq
	}
	if len(all) != 7 || all[0].Seq != 1 || all[6].Seq != 7 {
		t.Errorf("paging by 3 gave %d entries", len(all))
	}
	if es := entries(t, b, tn, &audit.ListOpts{Row: map[string]any{"id": ids[4]}}); len(es) != 1 || es[0].Seq != 5 {
		t.Errorf("by row: %+v", es)
	}
	if es := entries(t, b, tn, &audit.ListOpts{Actor: "user:nobody"}); len(es) != 0 {
		t.Errorf("by another actor: %d entries", len(es))
	}
	if es := entries(t, b, tn, &audit.ListOpts{Since: time.Now().Add(time.Hour)}); len(es) != 0 {
		t.Errorf("from the future: %d entries", len(es))
	}
	err := tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
		_, _, err := audit.List(ctx, tx, tn.Placement.Schema, tn.ID, &audit.ListOpts{Limit: 5000})
		return err
	})
	tenanttest.WantCode(t, "limit too large", err, tenancy.CodeInvalid)
}

// TestRedactedAndPurged: a column commented tenancy:redact never reaches the
// log; PurgeDeleted removes only rows deleted before the cutoff, and logs it.
func TestRedactedAndPurged(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	for _, tn := range b.Tenants {
		t.Run(string(tn.Model), func(t *testing.T) {
			ctx := context.Background()
			admin := b.AdminConn(t, tn)
			contacts := dataplane.Ident(tn.Placement.Schema, "contacts")
			if _, err := admin.Exec(ctx, `ALTER TABLE `+contacts+` ADD COLUMN ssn text; COMMENT ON COLUMN `+contacts+`.ssn IS 'tenancy:redact'`); err != nil {
				t.Fatal(err)
			}
			err := pgx.BeginFunc(ctx, admin, func(atx pgx.Tx) error {
				return datamodel.Protect(ctx, atx, datamodel.Target{Schema: tn.Placement.Schema, Grantee: grantee(b, tn), Tenant: pin(tn)})
			})
			if err != nil {
				t.Fatal(err)
			}
			err = tx(t, b, tn, nil, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email, ssn) VALUES ($1, 'Old', 'old@example.test', '123-45-6789'),
					($1, 'New', 'new@example.test', '987-65-4321')`, tn.ID)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `DELETE FROM contacts WHERE name = $1`, "Old")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries(t, b, tn, &audit.ListOpts{Table: "contacts"}) {
				if strings.Contains(string(e.Changes), "6789") || strings.Contains(string(e.Changes), "4321") {
					t.Errorf("entry %d carries a redacted value: %s", e.Seq, e.Changes)
				}
			}
			// Purge what was deleted before now: "Old" goes, "New" stays.
			var n int64
			err = pgx.BeginFunc(ctx, admin, func(atx pgx.Tx) (err error) {
				n, err = datamodel.PurgeDeletedTx(ctx, atx, tn.Placement.Schema, time.Now().Add(time.Second))
				return err
			})
			if err != nil || n != 1 {
				t.Fatalf("purge: %d rows, %v; want 1", n, err)
			}
			var left int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM `+contacts+` WHERE tenant_id = $1`, tn.ID).Scan(&left); err != nil || left != 1 {
				t.Errorf("after the purge %d contacts are left (%v), want 1", left, err)
			}
			es := entries(t, b, tn, &audit.ListOpts{Table: "contacts"})
			if len(es) == 0 || es[len(es)-1].Op != "purge" {
				t.Errorf("the purge is not in the log: %+v", es)
			}
			if v := verify(t, b, tn); !v.OK {
				t.Errorf("verify after the purge: %+v", v)
			}
		})
	}
}

func grantee(b *tenanttest.Bundle, tn *tenancy.Tenant) string {
	if tn.Model == tenancy.ModelShared {
		return b.AppRole
	}
	return tn.Role()
}

func pin(tn *tenancy.Tenant) (id [16]byte) {
	if tn.Model != tenancy.ModelShared {
		return tn.ID
	}
	return id
}

// TestHTTPRequestReachesTheLog: the actor, client IP and request id of an HTTP
// request arrive, through the middleware and the router, in the audit entry.
func TestHTTPRequestReachesTheLog(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	tn := b.Tenants[2]
	mw, err := httpx.Middleware(httpx.Config{Resolver: b.Platform.Cache, Sources: []httpx.Source{httpx.FromHeader("X-Tenant")}})
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := tenancy.WithActor(r.Context(), tenancy.Actor{Kind: "user", ID: "ada"})
		err := b.Platform.Router.Tx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'From HTTP')`, tn.ID)
			return err
		})
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	srv := httptest.NewServer(mw(h))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/companies", nil)
	req.Header.Set("X-Tenant", tn.Slug)
	req.Header.Set("X-Request-Id", "abc-123")
	req.Header.Set("User-Agent", "audit-test/1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", resp.StatusCode)
	}
	es := entries(t, b, tn, nil)
	if len(es) != 1 {
		t.Fatalf("%d entries, want 1", len(es))
	}
	e := es[0]
	if e.Actor != "user:ada" || e.ClientIP != "127.0.0.1" || e.RequestID != "abc-123" || e.UserAgent != "audit-test/1" {
		b, _ := json.Marshal(e)
		t.Errorf("entry from HTTP: %s", b)
	}
}
