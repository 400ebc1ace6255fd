package platform_test

// Faults of the control plane, on real PostgreSQL: the catalog database
// unreachable for a while, under an application serving HTTP.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// faultApp serves GET / for the tenant named by X-Tenant with one tenant
// transaction, as an application would.
func faultApp(t *testing.T, b *tenanttest.Bundle) *httptest.Server {
	t.Helper()
	p := b.Platform
	mw, err := httpx.Middleware(httpx.Config{Resolver: p.Cache})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int
		err := p.Router.Tx(r.Context(), func(tx pgx.Tx) error {
			return tx.QueryRow(r.Context(), `SELECT count(*) FROM contacts`).Scan(&n)
		})
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	})))
	t.Cleanup(srv.Close)
	return srv
}

// status sends GET / for slug and returns the status and, for errors, the
// problem's code.
func status(t *testing.T, srv *httptest.Server, slug string) (int, tenancy.Code) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tenant", slug)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := srv.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET / for %s: %v", slug, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	var p httpx.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("GET / for %s: %d %q: %v", slug, resp.StatusCode, body, err)
	}
	return resp.StatusCode, p.Code
}

// TestFaultCatalogUnreachable stops the catalog's server for a while. Known
// tenants are still served from the cache; a control change (creating a
// tenant) and an unknown slug are refused with 503 / CodeUnavailable, neither
// hanging nor claiming that the tenant does not exist; once the catalog is back
// the same process accepts control changes and follows them again.
func TestFaultCatalogUnreachable(t *testing.T) {
	t.Parallel()
	testCatalogUnreachable(t, false)
}

// testCatalogUnreachable is TestFaultCatalogUnreachable, with the router's
// data connections going through PgBouncer when pgbouncer is set (the catalog
// is still reached directly).
func testCatalogUnreachable(t *testing.T, pgbouncer bool) {
	catalogServer := pgtest.Restartable(t)
	b := tenanttest.Setup(t, &tenanttest.Opts{On: []*pgtest.Server{catalogServer.Server, pgtest.DefaultServer(t)}, PgBouncer: pgbouncer})
	const data = "pg2" // tenants live away from the catalog
	var known []*tenancy.Tenant
	for _, m := range tenancy.Models {
		known = append(known, b.CreateTenant(t, m, data))
	}
	srv := faultApp(t, b)
	for _, tn := range known {
		if code, _ := status(t, srv, tn.Slug); code != http.StatusOK {
			t.Fatalf("%s before the fault: %d", tn.Model, code)
		}
	}

	catalogServer.Stop(t)
	outage := time.Now()

	t.Run("KnownTenantsServed", func(t *testing.T) {
		for time.Since(outage) < 2*time.Second {
			for _, tn := range known {
				if got, code := status(t, srv, tn.Slug); got != http.StatusOK {
					t.Fatalf("%s tenant %v into the outage: %d %s, want 200 from the cache", tn.Model, time.Since(outage).Round(time.Millisecond), got, code)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("UnknownTenantUnavailable", func(t *testing.T) {
		start := time.Now()
		got, code := status(t, srv, "never-heard-of")
		if got != http.StatusServiceUnavailable || code != tenancy.CodeUnavailable {
			t.Errorf("unknown slug during the outage: %d %s, want 503 %s (the catalog cannot say it does not exist)", got, code, tenancy.CodeUnavailable)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the answer took %v", d)
		}
	})
	t.Run("ControlChangeRefused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := b.Platform.CreateTenant(ctx, &provision.CreateOpts{Slug: pgtest.UniqueName("out"), Model: tenancy.ModelSchema, Server: data})
		if err == nil {
			t.Fatal("a tenant was created while the catalog was unreachable")
		}
		if tenancy.ErrorCode(err) != tenancy.CodeUnavailable {
			t.Errorf("create tenant during the outage: code %s (%v), want %s", tenancy.ErrorCode(err), err, tenancy.CodeUnavailable)
		}
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("the refusal took %v", d)
		}
	})

	catalogServer.Start(t)
	t.Logf("catalog unreachable for %v", time.Since(outage).Round(time.Millisecond))

	// Recovery without restarting the process: control changes work again, and
	// reach the cache through the re-subscribed listener.
	var created *tenancy.Tenant
	deadline := time.Now().Add(20 * time.Second)
	for {
		tn, err := b.Platform.CreateTenant(context.Background(), &provision.CreateOpts{Slug: pgtest.UniqueName("back"), Model: tenancy.ModelSchema, Server: data})
		if err == nil {
			created = tn
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create tenant 20 s after the catalog came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, code := status(t, srv, created.Slug); got != http.StatusOK {
		t.Fatalf("tenant created after the outage: %d %s", got, code)
	}
	for _, tn := range known {
		if got, code := status(t, srv, tn.Slug); got != http.StatusOK {
			t.Fatalf("%s tenant after the outage: %d %s", tn.Model, got, code)
		}
	}
	victim := known[0]
	if _, err := b.Platform.Catalog.SetStatus(context.Background(), victim.ID, tenancy.StatusSuspended, tenancy.StatusActive); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		got, _ := status(t, srv, victim.Slug)
		if got == http.StatusForbidden {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a suspension after the outage did not reach the cache within 5 s (status %d)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFaultCatalogUnreachableWithLimits is the catalog outage with tenants'
// limits on: the limits last read are served with the tenants, so known
// tenants go on being served (and limited), instead of failing on limits the
// catalog cannot give.
func TestFaultCatalogUnreachableWithLimits(t *testing.T) {
	t.Parallel()
	testCatalogUnreachableWithLimits(t, false)
}

// testCatalogUnreachableWithLimits is TestFaultCatalogUnreachableWithLimits,
// with the router's data connections going through PgBouncer when pgbouncer
// is set.
func testCatalogUnreachableWithLimits(t *testing.T, pgbouncer bool) {
	catalogServer := pgtest.Restartable(t)
	b := tenanttest.Setup(t, &tenanttest.Opts{
		On:        []*pgtest.Server{catalogServer.Server, pgtest.DefaultServer(t)},
		Limits:    &platform.LimitsConfig{},
		PgBouncer: pgbouncer,
	})
	tn := b.CreateTenant(t, tenancy.ModelSchema, "pg2")
	srv := limitServer(t, b.Platform)
	// Serve until the tenant's creation has stopped reaching the cache: two
	// requests in a row answered without asking the catalog. The limits read
	// by then are cached too (they are dropped by the same notifications).
	for deadline := time.Now().Add(10 * time.Second); ; {
		misses := b.Platform.Cache.Stats().Misses
		for range 2 {
			if res := request(t, srv.Client(), srv.URL, tn.Slug); res.StatusCode != http.StatusNoContent {
				t.Fatalf("before the fault: %d", res.StatusCode)
			}
		}
		if b.Platform.Cache.Stats().Misses == misses {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache did not settle within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	catalogServer.Stop(t)
	outage := time.Now()
	for time.Since(outage) < 2*time.Second {
		res := request(t, srv.Client(), srv.URL, tn.Slug)
		if res.StatusCode != http.StatusNoContent || res.Header.Get("RateLimit-Policy") == "" {
			t.Fatalf("%v into the outage: %d %v, want 204 under the tenant's limits", time.Since(outage).Round(time.Millisecond), res.StatusCode, res.Header)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := b.Platform.Cache.Stats(); s.Stale == 0 {
		t.Fatalf("nothing was served stale: %+v", s)
	}
	catalogServer.Start(t)
}

// TestFaultConcurrentProvisioning creates more tenants at once than the
// catalog's connection pool has connections: every Create must finish. Each
// Create holds a connection for its tenant lock while it asks for others; the
// locks have a pool of their own, without which as many Creates as the pool
// has connections (4 by default) wait for each other for ever.
func TestFaultConcurrentProvisioning(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = b.Platform.CreateTenant(ctx, &provision.CreateOpts{
				Slug: pgtest.UniqueName("cc"), Model: tenancy.ModelSchema, Server: b.ServerNames[0],
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("create %d of %d at once: %v", i, len(errs), err)
		}
	}
}
