package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tenancyhq/tenancy"
)

// mapResolver is an in-memory Resolver standing for the catalog cache. It
// records every slug it is asked for.
type mapResolver struct {
	mu      sync.Mutex
	tenants map[string]*tenancy.Tenant
	errs    map[string]error // answered instead of a tenant
	asked   []string
}

func newMapResolver(tenants ...*tenancy.Tenant) *mapResolver {
	m := &mapResolver{tenants: map[string]*tenancy.Tenant{}, errs: map[string]error{}}
	for _, t := range tenants {
		m.tenants[t.Slug] = t
	}
	return m
}

func (m *mapResolver) ResolveSlug(_ context.Context, slug string) (*tenancy.Tenant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked = append(m.asked, slug)
	if err, ok := m.errs[slug]; ok {
		return m.tenants[slug], err
	}
	t, ok := m.tenants[slug]
	if !ok {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "no tenant %q", slug)
	}
	return t, nil
}

func (m *mapResolver) slugsAsked() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.asked...)
}

// takeAsked returns the slugs asked so far and forgets them.
func (m *mapResolver) takeAsked() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	asked := m.asked
	m.asked = nil
	return asked
}

func newTenant(slug string, status tenancy.Status) *tenancy.Tenant {
	return &tenancy.Tenant{ID: uuid.New(), Slug: slug, Name: strings.ToUpper(slug), Status: status, Model: tenancy.ModelShared}
}

// testBundle is a middleware over a mapResolver and a handler that records
// what it saw.
type testBundle struct {
	resolver *mapResolver
	handler  http.Handler
	logs     *bytes.Buffer

	mu   sync.Mutex
	seen []*http.Request // requests that reached the handler
}

func setup(t *testing.T, cfg Config) *testBundle {
	t.Helper()
	deleted := newTenant("deleted-at", tenancy.StatusActive)
	deleted.DeletedAt = new(time.Now())
	b := &testBundle{
		resolver: newMapResolver(
			newTenant("acme", tenancy.StatusActive),
			newTenant("globex", tenancy.StatusActive),
			newTenant("moving", tenancy.StatusMoving),
			newTenant("suspended", tenancy.StatusSuspended),
			newTenant("deleted", tenancy.StatusDeleted),
			deleted,
			newTenant("provisioning", tenancy.StatusProvisioning),
			newTenant("weird", tenancy.Status("frozen")),
		),
		logs: &bytes.Buffer{},
	}
	b.resolver.errs["broken"] = errors.New("catalog: connection refused to 10.0.0.5")
	b.resolver.errs["timeout"] = tenancy.Errorf(tenancy.CodeUnavailable, "catalog unavailable")
	b.resolver.errs["nil"] = nil // answers a nil tenant and a nil error
	b.resolver.tenants["liar"] = newTenant("acme", tenancy.StatusActive)
	b.resolver.tenants["no-id"] = &tenancy.Tenant{Slug: "no-id", Status: tenancy.StatusActive}

	if cfg.Resolver == nil {
		cfg.Resolver = b.resolver
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(&syncWriter{w: b.logs}, nil))
	}
	mw, err := Middleware(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.handler = mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.seen = append(b.seen, r)
		b.mu.Unlock()
		ten, ok := tenancy.TenantFromContext(r.Context())
		if !ok {
			t.Error("handler reached without a tenant")
			return
		}
		_, _ = w.Write([]byte(ten.Slug))
	}))
	return b
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (b *testBundle) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	b.handler.ServeHTTP(w, r)
	return w
}

func (b *testBundle) lastSeen(t *testing.T) *http.Request {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) == 0 {
		t.Fatal("the handler was not called")
	}
	return b.seen[len(b.seen)-1]
}

// decodeProblem checks that w is a problem+json answer with the status and
// code, and returns it.
func decodeProblem(t *testing.T, w *httptest.ResponseRecorder, status int, code tenancy.Code) Problem {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var p Problem
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decode problem: %v", err)
	}
	if p.Status != status || p.Code != code || p.Title != http.StatusText(status) || p.Type != "about:blank" {
		t.Fatalf("problem = %+v, want status %d code %q", p, status, code)
	}
	if p.RequestID == "" {
		t.Fatalf("problem without request_id")
	}
	return p
}

func TestMiddlewareStatus(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name      string
		tenant    string // X-Tenant header; "-" for none
		status    int
		code      tenancy.Code
		detail    string // substring of the detail
		askedSlug bool   // whether the resolver was asked
		logsError bool
	}{
		{"Active", "acme", 200, "", "", true, false},
		{"Moving", "moving", 200, "", "", true, false},
		{"NoTenant", "-", 400, tenancy.CodeNoTenant, "this request names no tenant", false, false},
		{"MalformedSlug", "Acme", 400, tenancy.CodeInvalid, `invalid tenant slug "Acme"`, false, false},
		{"HostileSlug", "acme'; DROP TABLE tenants; --", 400, tenancy.CodeInvalid, "invalid tenant slug", false, false},
		{"TooLongSlug", "a" + strings.Repeat("b", 63), 400, tenancy.CodeInvalid, "invalid tenant slug", false, false},
		{"Unknown", "initech", 404, tenancy.CodeNotFound, `no tenant "initech"`, true, false},
		{"Suspended", "suspended", 403, tenancy.CodeSuspended, `tenant "suspended" is suspended`, true, false},
		{"Deleted", "deleted", 410, tenancy.CodeGone, `tenant "deleted" was deleted`, true, false},
		{"DeletedAtSet", "deleted-at", 410, tenancy.CodeGone, "was deleted", true, false},
		{"Provisioning", "provisioning", 503, tenancy.CodeUnavailable, "being provisioned", true, false},
		{"ResolverUnavailable", "timeout", 503, tenancy.CodeUnavailable, "catalog unavailable", true, false},
		{"ResolverInternal", "broken", 500, tenancy.CodeInternal, "internal error", true, true},
		{"UnknownStatus", "weird", 500, tenancy.CodeInternal, "internal error", true, true},
		{"ResolverNilTenant", "nil", 500, tenancy.CodeInternal, "internal error", true, true},
		{"ResolverWrongSlug", "liar", 500, tenancy.CodeInternal, "internal error", true, true},
		{"ResolverNoID", "no-id", 500, tenancy.CodeInternal, "internal error", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{})
			r := httptest.NewRequest(http.MethodGet, "/contacts?q=1", nil)
			if tt.tenant != "-" {
				r.Header.Set("X-Tenant", tt.tenant)
			}
			w := b.do(r)

			asked := b.resolver.slugsAsked()
			if tt.askedSlug != (len(asked) == 1) {
				t.Errorf("resolver asked %q", asked)
			}
			for _, s := range asked {
				if err := tenancy.ValidateSlug(s); err != nil {
					t.Errorf("resolver asked an invalid slug: %v", err)
				}
			}
			if logged := strings.Contains(b.logs.String(), `"level":"ERROR"`); logged != tt.logsError {
				t.Errorf("logged = %v, want %v: %s", logged, tt.logsError, b.logs)
			}
			if tt.status == 200 {
				if w.Code != 200 || w.Body.String() != tt.tenant {
					t.Fatalf("got %d %q", w.Code, w.Body)
				}
				return
			}
			p := decodeProblem(t, w, tt.status, tt.code)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
			}
			if id := w.Header().Get("X-Request-Id"); p.RequestID != id {
				t.Errorf("problem request_id %q, response header %q", p.RequestID, id)
			}
			if p.Instance != "/contacts" {
				t.Errorf("instance = %q", p.Instance)
			}
			if tt.code == tenancy.CodeInternal && strings.Contains(p.Detail, "10.0.0.5") {
				t.Errorf("internal detail leaked: %q", p.Detail)
			}
			if tt.name == "ResolverInternal" && !strings.Contains(b.logs.String(), "10.0.0.5") {
				t.Errorf("internal error not logged: %s", b.logs)
			}
		})
	}
}

func TestMiddlewareContext(t *testing.T) {
	t.Parallel()

	b := setup(t, Config{Sources: []Source{FromPathPrefix("/t/")}})
	r := httptest.NewRequest(http.MethodPost, "/t/acme/contacts/42?x=1", nil)
	r.Header.Set("User-Agent", "crm-test/1.0")
	r.RemoteAddr = "198.51.100.7:51234"
	w := b.do(r)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	seen := b.lastSeen(t)
	ctx := seen.Context()
	if ten, ok := tenancy.TenantFromContext(ctx); !ok || ten.Slug != "acme" {
		t.Errorf("tenant = %+v", ten)
	}
	id := tenancy.RequestIDFromContext(ctx)
	if id == "" || w.Header().Get("X-Request-Id") != id {
		t.Errorf("request id in context %q, in response %q", id, w.Header().Get("X-Request-Id"))
	}
	if c, ok := tenancy.ClientFromContext(ctx); !ok || c != (tenancy.Client{IP: "198.51.100.7", UserAgent: "crm-test/1.0"}) {
		t.Errorf("client = %+v", c)
	}
	if seen.URL.Path != "/contacts/42" || seen.URL.RawQuery != "x=1" || seen.Method != http.MethodPost {
		t.Errorf("passed on %s %s?%s", seen.Method, seen.URL.Path, seen.URL.RawQuery)
	}
	if r.URL.Path != "/t/acme/contacts/42" {
		t.Errorf("the caller's request was modified: %q", r.URL.Path)
	}
	if loggerFrom(ctx) == discard {
		t.Errorf("the logger is not in the context")
	}
}

func TestMiddlewareSourceOrder(t *testing.T) {
	t.Parallel()

	b := setup(t, Config{Sources: []Source{FromHeader("X-Tenant"), FromSubdomain("example.com"), FromPathPrefix("/t/")}})
	tests := []struct {
		name   string
		header string
		host   string
		path   string
		status int
		want   string // tenant served
	}{
		{"HeaderWins", "globex", "acme.example.com", "/t/moving/x", 200, "globex"},
		{"SubdomainNext", "", "acme.example.com", "/t/moving/x", 200, "acme"},
		{"PathLast", "", "example.com", "/t/moving/x", 200, "moving"},
		{"None", "", "example.com", "/x", 400, ""},
		// The first source that finds something decides, even if malformed:
		// a bad header is not rescued by a good subdomain.
		{"MalformedHeaderStops", "ACME", "acme.example.com", "/", 400, ""},
		{"NestedSubdomainStops", "", "a.acme.example.com", "/t/acme/", 400, ""},
		{"UnknownHeaderStops", "initech", "acme.example.com", "/", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			r.Host = tt.host
			if tt.header != "" {
				r.Header.Set("X-Tenant", tt.header)
			}
			w := b.do(r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.status == 200 && w.Body.String() != tt.want {
				t.Errorf("served %q, want %q", w.Body, tt.want)
			}
		})
	}
}

func TestMiddlewareRequestID(t *testing.T) {
	t.Parallel()

	long := strings.Repeat("a", 128)
	tests := []struct {
		name     string
		header   string // the request id header used
		incoming []string
		accepted bool
	}{
		{"Generated", "", nil, false},
		{"Accepted", "", []string{"req-1.a_b:C"}, true},
		{"AcceptedMax", "", []string{long}, true},
		{"TooLong", "", []string{long + "a"}, false},
		{"Empty", "", []string{""}, false},
		{"Space", "", []string{"req 1"}, false},
		{"Injection", "", []string{`x","code":"evil`}, false},
		{"Unicode", "", []string{"réq"}, false},
		{"CustomHeader", "X-Correlation-ID", []string{"corr-9"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{RequestIDHeader: tt.header})
			name := tt.header
			if name == "" {
				name = "X-Request-Id"
			}
			for _, status := range []int{200, 404} {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header.Set("X-Tenant", map[int]string{200: "acme", 404: "initech"}[status])
				for _, v := range tt.incoming {
					r.Header.Add(name, v)
				}
				w := b.do(r)
				if w.Code != status {
					t.Fatalf("status %d", w.Code)
				}
				got := w.Header().Get(name)
				if !validRequestID(got) {
					t.Fatalf("response id %q is not valid", got)
				}
				if accepted := len(tt.incoming) > 0 && got == tt.incoming[0]; accepted != tt.accepted {
					t.Errorf("incoming %q, answered %q", tt.incoming, got)
				}
				if status == 200 {
					if ctxID := tenancy.RequestIDFromContext(b.lastSeen(t).Context()); ctxID != got {
						t.Errorf("context id %q, response id %q", ctxID, got)
					}
				} else {
					if p := decodeProblemAnyID(t, w); p.RequestID != got {
						t.Errorf("problem id %q, response id %q", p.RequestID, got)
					}
				}
			}
		})
	}

	t.Run("Unique", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		ids := map[string]bool{}
		for range 100 {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("X-Tenant", "acme")
			ids[b.do(r).Header().Get("X-Request-Id")] = true
		}
		if len(ids) != 100 {
			t.Errorf("%d distinct ids in 100 requests", len(ids))
		}
	})
}

func decodeProblemAnyID(t *testing.T, w *httptest.ResponseRecorder) Problem {
	t.Helper()
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMiddlewareClientIP(t *testing.T) {
	t.Parallel()

	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     []string
		want    string
	}{
		{"Peer", nil, "198.51.100.7:1234", nil, "198.51.100.7"},
		{"PeerIPv6", nil, "[2001:db8::1]:1234", nil, "2001:db8::1"},
		{"PeerZone", nil, "[fe80::1%eth0]:1234", nil, "fe80::1"},
		{"PeerMapped", nil, "[::ffff:198.51.100.7]:1234", nil, "198.51.100.7"},
		{"PeerNoPort", nil, "198.51.100.7", nil, "198.51.100.7"},
		{"PeerUnparsable", nil, "@", nil, ""},
		{"UntrustedXFFIgnored", nil, "198.51.100.7:1234", []string{"203.0.113.9"}, "198.51.100.7"},
		{"UntrustedPeerXFFIgnored", proxies, "198.51.100.7:1234", []string{"203.0.113.9"}, "198.51.100.7"},
		{"TrustedProxy", proxies, "10.1.2.3:1234", []string{"203.0.113.9"}, "203.0.113.9"},
		{"TrustedProxyNoXFF", proxies, "10.1.2.3:1234", nil, "10.1.2.3"},
		{"TrustedChain", proxies, "10.1.2.3:1234", []string{"203.0.113.9, 10.9.9.9"}, "203.0.113.9"},
		{"ForgedLeft", proxies, "10.1.2.3:1234", []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"ForgedLeftSeparateHeaders", proxies, "10.1.2.3:1234", []string{"1.1.1.1", "203.0.113.9, 10.0.0.1"}, "203.0.113.9"},
		{"AllTrusted", proxies, "10.1.2.3:1234", []string{"10.0.0.2, 10.0.0.1"}, "10.0.0.2"},
		{"GarbageStops", proxies, "10.1.2.3:1234", []string{"1.1.1.1, garbage, 10.0.0.1"}, "10.0.0.1"},
		{"EmptyElementStops", proxies, "10.1.2.3:1234", []string{"1.1.1.1,,"}, "10.1.2.3"},
		{"XFFWithPort", proxies, "10.1.2.3:1234", []string{"203.0.113.9:5555"}, "203.0.113.9"},
		{"XFFIPv6", proxies, "[2001:db8:ffff::1]:1234", []string{"2001:db8:1::9"}, "2001:db8:1::9"},
		{"MappedPrefix", []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, "10.1.2.3:1234", []string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{TrustedProxies: tt.trusted})
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			r.Header.Set("X-Tenant", "acme")
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if w := b.do(r); w.Code != 200 {
				t.Fatalf("status %d", w.Code)
			}
			c, _ := tenancy.ClientFromContext(b.lastSeen(t).Context())
			if c.IP != tt.want {
				t.Errorf("client IP = %q, want %q", c.IP, tt.want)
			}
		})
	}
}

func TestMiddlewareUserAgent(t *testing.T) {
	t.Parallel()

	tests := []struct{ name, in, want string }{
		{"Plain", "curl/8.5", "curl/8.5"},
		{"InvalidUTF8", "a\xffb", "a\uFFFDb"},
		{"Control", "a\x7fb\tc", "abc"},
		{"Long", strings.Repeat("é", 300), strings.Repeat("é", 256)},
		{"LongSplitRune", "x" + strings.Repeat("é", 300), "x" + strings.Repeat("é", 255)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{})
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("X-Tenant", "acme")
			r.Header.Set("User-Agent", tt.in)
			b.do(r)
			c, _ := tenancy.ClientFromContext(b.lastSeen(t).Context())
			if c.UserAgent != tt.want {
				t.Errorf("user agent = %q, want %q", c.UserAgent, tt.want)
			}
		})
	}
}

func TestMiddlewareConfig(t *testing.T) {
	t.Parallel()

	res := newMapResolver()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"NoResolver", Config{}},
		{"BadRequestIDHeader", Config{Resolver: res, RequestIDHeader: "X Request"}},
		{"InvalidProxy", Config{Resolver: res, TrustedProxies: []netip.Prefix{{}}}},
		{"NilSource", Config{Resolver: res, Sources: []Source{FromHeader("X-Tenant"), nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Middleware(tt.cfg); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
				t.Fatalf("error = %v, want code invalid", err)
			}
		})
	}

	t.Run("NilLoggerDiscards", func(t *testing.T) {
		t.Parallel()
		res := newMapResolver()
		res.errs["broken"] = errors.New("boom")
		mw, err := Middleware(Config{Resolver: res})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-Tenant", "broken")
		w := httptest.NewRecorder()
		mw(http.NotFoundHandler()).ServeHTTP(w, r)
		decodeProblem(t, w, 500, tenancy.CodeInternal)
	})
}

// customSource is a Source from outside this package: it reports a malformed
// value as found with an invalid slug, and strips nothing.
type customSource struct{ slug string }

func (s customSource) Slug(r *http.Request) (string, bool, *http.Request) {
	return s.slug, s.slug != "none", nil
}

func TestMiddlewareCustomSource(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		slug   string
		status int
	}{{"acme", 200}, {"none", 400}, {"", 400}, {"../acme", 400}} {
		b := setup(t, Config{Sources: []Source{customSource{tt.slug}}})
		w := b.do(httptest.NewRequest(http.MethodGet, "/", nil))
		if w.Code != tt.status {
			t.Errorf("slug %q: status %d, want %d", tt.slug, w.Code, tt.status)
		}
	}
}

func FuzzMiddleware(f *testing.F) {
	f.Add("acme", "acme.example.com", "/t/acme/x", "10.0.0.1:1", "203.0.113.9")
	f.Add("", "a.b.example.com:80", "/t//x", "[::1]:1", "")
	f.Add("ACME", "\u212Acme.example.com", "/t/ac%2Fme/x", "garbage", "1.1.1.1, x")
	f.Add("", "suspended.example.com.", "/", "10.0.0.1:1", "")
	f.Add("", "", "/t/deleted/", "", "")
	f.Add("broken", "", "*", "", "")
	f.Add("acme\x00", "ex\xffample.com", "/t/%zz", "", "")

	b := &testBundle{resolver: newMapResolver(
		newTenant("acme", tenancy.StatusActive),
		newTenant("suspended", tenancy.StatusSuspended),
		newTenant("deleted", tenancy.StatusDeleted),
		newTenant("provisioning", tenancy.StatusProvisioning),
	)}
	b.resolver.errs["broken"] = errors.New("boom")
	mw, err := Middleware(Config{
		Resolver:       b.resolver,
		Sources:        []Source{FromHeader("X-Tenant"), FromSubdomain("example.com"), FromPathPrefix("/t/")},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		f.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := tenancy.TenantFromContext(r.Context()); !ok {
			panic("handler reached without a tenant")
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	statuses := map[int]bool{204: true, 400: true, 403: true, 404: true, 410: true, 500: true, 503: true}

	f.Fuzz(func(t *testing.T, tenant, host, target, remote, xff string) {
		r, err := http.NewRequest(http.MethodGet, "http://placeholder/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Host, r.RemoteAddr, r.RequestURI = host, remote, target
		r.URL.Path, r.URL.RawPath = target, ""
		if u, err := r.URL.Parse(target); err == nil {
			r.URL = u
		}
		r.Header.Set("X-Tenant", tenant)
		r.Header.Set("X-Forwarded-For", xff)
		r.Header.Set("X-Request-Id", tenant)

		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		for _, s := range b.resolver.takeAsked() {
			if err := tenancy.ValidateSlug(s); err != nil {
				t.Fatalf("the resolver was asked an invalid slug: %v", err)
			}
		}
		if !statuses[w.Code] {
			t.Fatalf("status %d", w.Code)
		}
		if !validRequestID(w.Header().Get("X-Request-Id")) {
			t.Fatalf("request id %q", w.Header().Get("X-Request-Id"))
		}
		if w.Code == http.StatusNoContent {
			return
		}
		if ct := w.Header().Get("Content-Type"); ct != ContentType {
			t.Fatalf("Content-Type %q", ct)
		}
		var p Problem
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			t.Fatalf("body %q: %v", w.Body, err)
		}
		if p.Status != w.Code || StatusCode(p.Code) != w.Code || p.RequestID != w.Header().Get("X-Request-Id") {
			t.Fatalf("problem %+v for status %d", p, w.Code)
		}
	})
}
