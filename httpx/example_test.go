package httpx_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/google/uuid"
	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// memResolver stands for the catalog's cache.
type memResolver map[string]*tenancy.Tenant

func (m memResolver) ResolveSlug(_ context.Context, slug string) (*tenancy.Tenant, error) {
	if t, ok := m[slug]; ok {
		return t, nil
	}
	return nil, tenancy.Errorf(tenancy.CodeNotFound, "no tenant %q", slug)
}

func ExampleMiddleware() {
	resolver := memResolver{
		"acme": {ID: uuid.New(), Slug: "acme", Name: "Acme Corp", Status: tenancy.StatusActive},
	}
	mw, err := httpx.Middleware(httpx.Config{
		Resolver: resolver,
		Sources:  []httpx.Source{httpx.FromHeader("X-Tenant"), httpx.FromPathPrefix("/t/")},
	})
	if err != nil {
		panic(err)
	}
	handler := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, _ := tenancy.TenantFromContext(r.Context())
		fmt.Fprintf(w, "%s sees %s", t.Name, r.URL.Path)
	}))

	for _, target := range []string{"/t/acme/contacts", "/t/initech/contacts"} {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.Header.Set("X-Request-Id", "req-42")
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		body, _ := io.ReadAll(w.Body)
		fmt.Printf("%d %s\n%s\n", w.Code, w.Header().Get("Content-Type"), body)
	}
	// Output:
	// 200 text/plain; charset=utf-8
	// Acme Corp sees /contacts
	// 404 application/problem+json
	// {"type":"about:blank","title":"Not Found","status":404,"detail":"no tenant \"initech\"","instance":"/t/initech/contacts","code":"not_found","request_id":"req-42"}
}

// memLimits stands for the catalog's cache: every tenant's plan allows one
// request per second with a burst of two.
type memLimits struct{}

func (memLimits) Limits(context.Context, *tenancy.Tenant) (tenancy.Limits, error) {
	return tenancy.Limits{RPS: 1, Burst: 2}, nil
}

func ExampleLimit() {
	resolve, err := httpx.Middleware(httpx.Config{Resolver: memResolver{
		"acme": {ID: uuid.New(), Slug: "acme", Status: tenancy.StatusActive},
	}})
	if err != nil {
		panic(err)
	}
	limit, err := httpx.Limit(httpx.LimitConfig{Limiter: ratelimit.NewLocal(), Limits: memLimits{}})
	if err != nil {
		panic(err)
	}
	handler := resolve(limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "/contacts", nil)
		r.Header.Set("X-Tenant", "acme")
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("RateLimit-Policy"), w.Header().Get("RateLimit"))
		if retry := w.Header().Get("Retry-After"); retry != "" {
			fmt.Println("retry after", retry)
		}
	}
	// Output:
	// 204 "tenant";q=2;w=2 "tenant";r=1;t=1
	// 204 "tenant";q=2;w=2 "tenant";r=0;t=2
	// 429 "tenant";q=2;w=2 "tenant";r=0;t=2
	// retry after 1
}
