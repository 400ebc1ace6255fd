package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// mapLimits is an in-memory LimitsSource standing for the catalog cache.
type mapLimits struct {
	mu  sync.Mutex
	m   map[uuid.UUID]tenancy.Limits
	err error
}

func (m *mapLimits) Limits(_ context.Context, t *tenancy.Tenant) (tenancy.Limits, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[t.ID], m.err
}

func (m *mapLimits) set(id uuid.UUID, l tenancy.Limits) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[id] = l
}

type limitBundle struct {
	acme, initech *tenancy.Tenant
	limits        *mapLimits
	handler       http.Handler
	served        int
}

// setupLimit chains Middleware (tenant from X-Tenant) → Limit → a handler that
// counts what it serves, with a Local limiter.
func setupLimit(t *testing.T, class func(*http.Request) string) *limitBundle {
	t.Helper()
	b := &limitBundle{
		acme:    &tenancy.Tenant{ID: uuid.New(), Slug: "acme", Status: tenancy.StatusActive},
		initech: &tenancy.Tenant{ID: uuid.New(), Slug: "initech", Status: tenancy.StatusActive},
		limits:  &mapLimits{m: map[uuid.UUID]tenancy.Limits{}},
	}
	b.limits.set(b.acme.ID, tenancy.Limits{RPS: 2, Burst: 3})
	b.limits.set(b.initech.ID, tenancy.Limits{RPS: 2, Burst: 3})
	resolve, err := Middleware(Config{Resolver: newMapResolver(b.acme, b.initech)})
	if err != nil {
		t.Fatal(err)
	}
	limit, err := Limit(LimitConfig{Limiter: ratelimit.NewLocal(), Limits: b.limits, Class: class})
	if err != nil {
		t.Fatal(err)
	}
	b.handler = resolve(limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.served++
		w.WriteHeader(http.StatusNoContent)
	})))
	return b
}

func (b *limitBundle) do(slug, path string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set("X-Tenant", slug)
	w := httptest.NewRecorder()
	b.handler.ServeHTTP(w, r)
	return w
}

func TestLimit(t *testing.T) {
	t.Run("HeadersAnd429", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setupLimit(t, nil)
			for i, want := range []string{`"tenant";r=2;t=1`, `"tenant";r=1;t=1`, `"tenant";r=0;t=2`} {
				w := b.do("acme", "/")
				if w.Code != http.StatusNoContent || w.Header().Get("RateLimit") != want ||
					w.Header().Get("RateLimit-Policy") != `"tenant";q=3;w=2` || w.Header().Get("Retry-After") != "" {
					t.Fatalf("request %d: %d %v", i, w.Code, w.Header())
				}
			}
			w := b.do("acme", "/")
			if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" ||
				w.Header().Get("Content-Type") != ContentType || w.Header().Get("RateLimit") != `"tenant";r=0;t=2` {
				t.Fatalf("over the limit: %d %v", w.Code, w.Header())
			}
			var p Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Code != tenancy.CodeRateLimited || p.Status != 429 {
				t.Fatalf("problem %+v (%v)", p, err)
			}
			if b.served != 3 {
				t.Fatalf("served %d, want 3: a refused request reached the handler", b.served)
			}
			// Another tenant has its own budget.
			if w := b.do("initech", "/"); w.Code != http.StatusNoContent {
				t.Fatalf("initech refused because of acme: %d", w.Code)
			}
			// After Retry-After, acme is served again.
			time.Sleep(500 * time.Millisecond)
			if w := b.do("acme", "/"); w.Code != http.StatusNoContent {
				t.Fatalf("after waiting: %d", w.Code)
			}
		})
	})
	t.Run("PlanChangeApplies", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setupLimit(t, nil)
			for range 3 {
				b.do("acme", "/")
			}
			if w := b.do("acme", "/"); w.Code != http.StatusTooManyRequests {
				t.Fatalf("over the limit: %d", w.Code)
			}
			// The whole burst was used: it refills at the new rate, from the
			// first decision under it.
			b.limits.set(b.acme.ID, tenancy.Limits{RPS: 100, Burst: 50})
			if w := b.do("acme", "/"); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
				t.Fatalf("right after raising the plan: %d %v", w.Code, w.Header())
			}
			time.Sleep(10 * time.Millisecond)
			if w := b.do("acme", "/"); w.Code != http.StatusNoContent || w.Header().Get("RateLimit-Policy") != `"tenant";q=50;w=1` {
				t.Fatalf("after raising the plan: %d %v", w.Code, w.Header())
			}
			b.limits.set(b.acme.ID, tenancy.Limits{}) // no rate: not limited, no headers
			for range 100 {
				if w := b.do("acme", "/"); w.Code != http.StatusNoContent || w.Header().Get("RateLimit") != "" {
					t.Fatalf("unlimited: %d %v", w.Code, w.Header())
				}
			}
		})
	})
	t.Run("RouteClasses", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := setupLimit(t, func(r *http.Request) string {
				if r.URL.Path == "/export" {
					return "export"
				}
				return ""
			})
			for range 3 {
				b.do("acme", "/export")
			}
			w := b.do("acme", "/export")
			if w.Code != http.StatusTooManyRequests || w.Header().Get("RateLimit-Policy") != `"export";q=3;w=2` {
				t.Fatalf("export over its limit: %d %v", w.Code, w.Header())
			}
			if w := b.do("acme", "/contacts"); w.Code != http.StatusNoContent || w.Header().Get("RateLimit") != `"tenant";r=2;t=1` {
				t.Fatalf("the default class paid for export: %d %v", w.Code, w.Header())
			}
		})
	})
	t.Run("BadInput", func(t *testing.T) {
		b := setupLimit(t, func(r *http.Request) string { return r.URL.Query().Get("class") })
		w := b.do("acme", "/?class=Bad%20Class")
		if w.Code != http.StatusInternalServerError || b.served != 0 {
			t.Fatalf("invalid class: %d, served %d", w.Code, b.served)
		}
		b.limits.set(b.acme.ID, tenancy.Limits{RPS: -5, Burst: 1})
		if w := b.do("acme", "/"); w.Code != http.StatusBadRequest || b.served != 0 {
			t.Fatalf("invalid limits: %d, served %d", w.Code, b.served)
		}
		b.limits.err = errors.New("catalog down")
		if w := b.do("initech", "/"); w.Code != http.StatusInternalServerError || b.served != 0 {
			t.Fatalf("limits unknown: %d, served %d", w.Code, b.served)
		}
	})
	t.Run("NoTenantIsRefused", func(t *testing.T) {
		limit, err := Limit(LimitConfig{Limiter: ratelimit.NewLocal(), Limits: &mapLimits{}})
		if err != nil {
			t.Fatal(err)
		}
		served := false
		h := limit(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true }))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		if w.Code != http.StatusBadRequest || served {
			t.Fatalf("without a tenant: %d, served %v", w.Code, served)
		}
	})
	t.Run("Config", func(t *testing.T) {
		for _, cfg := range []LimitConfig{{}, {Limiter: ratelimit.NewLocal()}, {Limits: &mapLimits{}}} {
			if _, err := Limit(cfg); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
				t.Errorf("Limit(%+v): %v, want CodeInvalid", cfg, err)
			}
		}
	})
}

func TestWriteErrorRateLimitedRetryAfter(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), tenancy.Errorf(tenancy.CodeRateLimited, "too many transactions"))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	w = httptest.NewRecorder()
	w.Header().Set("Retry-After", "7")
	WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), tenancy.Errorf(tenancy.CodeRateLimited, "over"))
	if w.Header().Get("Retry-After") != "7" {
		t.Fatalf("Retry-After set by the caller was replaced: %v", w.Header())
	}
}
