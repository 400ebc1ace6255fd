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
