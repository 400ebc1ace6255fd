package platform_test

// End to end over real HTTP: httpx resolves the tenant through the platform's
// cache, the handler runs a tenant transaction through the router, and what
// the request carried (request id, client, actor) arrives in PostgreSQL.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// answer is what the test handler reads inside the tenant's transaction.
type answer struct {
	Tenant    string `json:"tenant"`
	Path      string `json:"path"`
	RequestID string `json:"request_id"`
	ClientIP  string `json:"client_ip"`
	Actor     string `json:"actor"`
	Contacts  int    `json:"contacts"`
}

// authenticate stands for the application's auth layer, which knows the
// actor; httpx does not. "Authorization: Bearer u-7" acts as user u-7.
func authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			r = r.WithContext(tenancy.WithActor(r.Context(), tenancy.Actor{Kind: "user", ID: id}))
		}
		next.ServeHTTP(w, r)
	})
}

type testBundle struct {
	*tenanttest.Bundle
	srv *httptest.Server
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{Bundle: tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})}
	p := b.Platform
	mw, err := httpx.Middleware(httpx.Config{
		Resolver: p.Cache,
		Sources:  []httpx.Source{httpx.FromHeader("X-Tenant"), httpx.FromPathPrefix("/t/")},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /contacts", func(w http.ResponseWriter, r *http.Request) {
		tn, _ := tenancy.TenantFromContext(r.Context())
		a := answer{Tenant: tn.Slug, Path: r.URL.Path}
		err := p.Router.Tx(r.Context(), func(tx pgx.Tx) error {
			return tx.QueryRow(r.Context(), `SELECT current_setting('app.request_id'), current_setting('app.client_ip'),
				coalesce(current_setting('app.actor', true), ''), (SELECT count(*) FROM contacts)`).
				Scan(&a.RequestID, &a.ClientIP, &a.Actor, &a.Contacts)
		})
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	})
	b.srv = httptest.NewServer(mw(authenticate(mux)))
	t.Cleanup(b.srv.Close)
	return b
}

// seed gives tenant tn n contacts.
func seed(t *testing.T, b *testBundle, tn *tenancy.Tenant, n int) {
	t.Helper()
	err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		for i := range n {
			if _, err := tx.Exec(context.Background(), `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, $2, $3)`,
				tn.ID, fmt.Sprintf("person %d", i), fmt.Sprintf("p%d@%s.test", i, tn.Slug)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed %s: %v", tn.Slug, err)
	}
}

type response struct {
	status  int
	header  http.Header
	answer  answer
	problem httpx.Problem
	body    string
}

// get sends GET path with the headers (name, value, name, value, …).
func (b *testBundle) get(t *testing.T, path string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(body)}
	into := any(&r.answer)
	if resp.StatusCode != http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != httpx.ContentType {
			t.Fatalf("GET %s: %d with Content-Type %q, want %s: %s", path, resp.StatusCode, ct, httpx.ContentType, body)
		}
		into = &r.problem
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %d %q: %v", path, resp.StatusCode, body, err)
	}
	return r
}

// wantProblem fails unless r is the problem with the status and code.
func wantProblem(t *testing.T, r response, status int, code tenancy.Code) {
	t.Helper()
	if r.status != status || r.problem.Status != status || r.problem.Code != code {
		t.Fatalf("got %d %s, want %d %s: %s", r.status, r.problem.Code, status, code, r.body)
	}
	if r.problem.RequestID == "" || r.problem.RequestID != r.header.Get("X-Request-Id") {
		t.Fatalf("problem request id %q, header %q", r.problem.RequestID, r.header.Get("X-Request-Id"))
	}
}

// await polls path until it is answered with status, for at most 5 s: the
// platform's cache trusts an entry for 30 s, so only the catalog's
// notification can explain a change seen sooner.
func (b *testBundle) await(t *testing.T, path string, status int, headers ...string) response {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := b.get(t, path, headers...)
		if r.status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d after 5 s, want %d: %s", path, r.status, status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHTTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	for i, tn := range b.Tenants {
		seed(t, b, tn, i+1) // a different count for each tenant
	}
	suspend := b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0])
	remove := b.CreateTenant(t, tenancy.ModelDatabase, b.ServerNames[0])

	for i, tn := range b.Tenants {
		name := strings.ToUpper(string(tn.Model[:1])) + string(tn.Model[1:])
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name, path string
				headers    []string
			}{
				{"ByPath", "/t/" + tn.Slug + "/contacts", nil},
				{"ByHeader", "/contacts", []string{"X-Tenant", tn.Slug}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					id := "req-" + tn.Slug + "." + tc.name
					r := b.get(t, tc.path, append(tc.headers, "X-Request-Id", id, "Authorization", "Bearer u-7",
						"X-Forwarded-For", "203.0.113.9")...)
					if r.status != http.StatusOK {
						t.Fatalf("got %d: %s", r.status, r.body)
					}
					want := answer{Tenant: tn.Slug, Path: "/contacts", RequestID: id, ClientIP: "127.0.0.1", Actor: "user:u-7", Contacts: i + 1}
					if r.answer != want {
						t.Fatalf("got %+v\nwant %+v", r.answer, want)
					}
					if got := r.header.Get("X-Request-Id"); got != id {
						t.Fatalf("X-Request-Id echoed as %q, want %q", got, id)
					}
				})
			}
		})
	}

	t.Run("GeneratedRequestID", func(t *testing.T) {
		t.Parallel()
		tn := b.Tenants[0]
		// Without an id, or with one that could smuggle anything, the
		// middleware makes one, and that is the one the transaction sees.
		for _, sent := range []string{"", `x', 'y`, strings.Repeat("a", 129)} {
			r := b.get(t, "/t/"+tn.Slug+"/contacts", "X-Request-Id", sent)
			if r.status != http.StatusOK {
				t.Fatalf("got %d: %s", r.status, r.body)
			}
			if got := r.header.Get("X-Request-Id"); got == "" || got == sent || r.answer.RequestID != got {
				t.Fatalf("sent %q: header %q, transaction %q", sent, got, r.answer.RequestID)
			}
			if r.answer.Actor != "" {
				t.Fatalf("actor %q without authentication", r.answer.Actor)
			}
		}
	})

	t.Run("UnknownTenant", func(t *testing.T) {
		t.Parallel()
		r := b.get(t, "/t/no-such-tenant/contacts", "X-Request-Id", "req-unknown")
		wantProblem(t, r, http.StatusNotFound, tenancy.CodeNotFound)
		if r.problem.RequestID != "req-unknown" || r.problem.Instance != "/t/no-such-tenant/contacts" {
			t.Fatalf("problem %+v", r.problem)
		}
		wantProblem(t, b.get(t, "/contacts", "X-Tenant", "no-such-tenant"), http.StatusNotFound, tenancy.CodeNotFound)
	})

	t.Run("Malformed", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			path    string
			headers []string
			code    tenancy.Code
		}{
			{"/contacts", []string{"X-Tenant", "Bad_Slug"}, tenancy.CodeInvalid},
			{"/contacts", []string{"X-Tenant", `a"; DROP TABLE x; --`}, tenancy.CodeInvalid},
			{"/contacts", []string{"X-Tenant", b.Tenants[0].Slug, "X-Tenant", b.Tenants[1].Slug}, tenancy.CodeInvalid},
			{"/t/a%22%3Bdrop/contacts", nil, tenancy.CodeInvalid},
			{"/t/ACME/contacts", nil, tenancy.CodeInvalid},
			{"/t//contacts", nil, tenancy.CodeNoTenant},
			{"/contacts", nil, tenancy.CodeNoTenant},
		} {
			wantProblem(t, b.get(t, tc.path, tc.headers...), http.StatusBadRequest, tc.code)
		}
	})

	t.Run("Suspended", func(t *testing.T) {
		t.Parallel()
		path := "/t/" + suspend.Slug + "/contacts"
		b.await(t, path, http.StatusOK) // cached
		if _, err := b.Platform.Catalog.SetStatus(ctx, suspend.ID, tenancy.StatusSuspended, tenancy.StatusActive); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, b.await(t, path, http.StatusForbidden), http.StatusForbidden, tenancy.CodeSuspended)
		if _, err := b.Platform.Catalog.SetStatus(ctx, suspend.ID, tenancy.StatusActive, tenancy.StatusSuspended); err != nil {
			t.Fatal(err)
		}
		b.await(t, path, http.StatusOK)
	})

	t.Run("Deleted", func(t *testing.T) {
		t.Parallel()
		path := "/t/" + remove.Slug + "/contacts"
		b.await(t, path, http.StatusOK)
		if _, err := b.Platform.Catalog.SetStatus(ctx, remove.ID, tenancy.StatusDeleted, tenancy.StatusActive); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, b.await(t, path, http.StatusGone), http.StatusGone, tenancy.CodeGone)
		wantProblem(t, b.get(t, "/contacts", "X-Tenant", remove.Slug), http.StatusGone, tenancy.CodeGone)
	})
}
