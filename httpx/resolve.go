package httpx

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/google/uuid"
	"github.com/tenancyhq/tenancy"
)

// Resolver looks up a tenant by slug; the catalog's cache implements it.
// Errors carry tenancy codes: CodeNotFound when no tenant has the slug. An
// error without a code is answered 500 and logged.
//
// Middleware calls ResolveSlug only with slugs that tenancy.ValidateSlug
// accepts, and serves the tenant only if its Slug is the one asked for.
type Resolver interface {
	ResolveSlug(ctx context.Context, slug string) (*tenancy.Tenant, error)
}

// Config configures Middleware.
type Config struct {
	// Resolver looks up the tenant a request names. Required.
	Resolver Resolver

	// Sources are tried in order; the first that finds a slug wins, even if
	// that slug turns out to be malformed (later sources are not consulted).
	// Default: FromHeader("X-Tenant").
	Sources []Source

	// Logger receives internal errors, with the request id and the tenant;
	// Middleware also puts it into the request context for WriteError (see
	// WithLogger). Nil discards: the library prints nothing by default.
	Logger *slog.Logger

	// RequestIDHeader names the header that carries the request id, in the
	// request and in the response. An incoming id is accepted only if it is 1
	// to 128 characters of [A-Za-z0-9._:-]; otherwise (or if there is none) a
	// fresh random id is generated. Default: "X-Request-Id".
	RequestIDHeader string

	// TrustedProxies are the networks of the reverse proxies whose
	// X-Forwarded-For is believed when computing the client IP: while the
	// peer, then each address of X-Forwarded-For from the right, is in one of
	// these, the next one to the left is taken. Default: none, so the client IP
	// is the peer address of the connection (RemoteAddr).
	TrustedProxies []netip.Prefix
}

// Middleware returns net/http middleware that resolves the tenant of each
// request and serves it with a context that carries the tenant
// (tenancy.WithTenant), the request id (tenancy.WithRequestID, also echoed in
// the response header named by Config.RequestIDHeader), the client
// (tenancy.WithClient: IP and User-Agent) and the logger (WithLogger).
// Handlers read them with the root package's functions, such as
// tenancy.TenantFromContext.
//
// A request is refused with a problem (see WriteError) when no source finds a
// slug (400, CodeNoTenant), the slug or the part of the request that holds it
// is malformed (400, CodeInvalid; the Resolver is never called with it), no
// tenant has the slug (404), or the tenant is suspended (403), deleted (410,
// also when DeletedAt is set) or provisioning (503). Active and moving tenants are served. Resolver errors
// without a code, and tenants with an unknown status, are answered 500.
//
// It returns an error with code CodeInvalid when cfg is unusable: no Resolver,
// a nil Source, an invalid argument to a Source constructor, an invalid header
// name, or an invalid prefix.
func Middleware(cfg Config) (func(http.Handler) http.Handler, error) {
	m, err := newMiddleware(cfg)
	if err != nil {
		return nil, err
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.serve(next, w, r)
		})
	}, nil
}

type middleware struct {
	resolver Resolver
	sources  []Source
	logger   *slog.Logger
	idHeader string
	trusted  []netip.Prefix
}

func newMiddleware(cfg Config) (*middleware, error) {
	invalid := func(format string, args ...any) error {
		return tenancy.Errorf(tenancy.CodeInvalid, "httpx: "+format, args...)
	}
	if cfg.Resolver == nil {
		return nil, invalid("Config.Resolver is required")
	}
	m := &middleware{
		resolver: cfg.Resolver,
		sources:  cfg.Sources,
		logger:   cfg.Logger,
		idHeader: cfg.RequestIDHeader,
	}
	if len(m.sources) == 0 {
		m.sources = []Source{FromHeader("X-Tenant")}
	}
	m.sources = append([]Source(nil), m.sources...) // the caller keeps its slice
	for i, s := range m.sources {
		if s == nil {
			return nil, invalid("Config.Sources[%d] is nil", i)
		}
		if v, ok := s.(validator); ok {
			if err := v.validate(); err != nil {
				return nil, err
			}
		}
	}
	if m.logger == nil {
		m.logger = discard
	}
	if m.idHeader == "" {
		m.idHeader = "X-Request-Id"
	}
	if !validToken(m.idHeader) {
		return nil, invalid("invalid Config.RequestIDHeader %q", m.idHeader)
	}
	m.idHeader = http.CanonicalHeaderKey(m.idHeader)
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, invalid("invalid prefix %v in Config.TrustedProxies", p)
		}
		// Addresses are compared unmapped, so a 4in6 prefix becomes IPv4.
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		m.trusted = append(m.trusted, p.Masked())
	}
	return m, nil
}

func (m *middleware) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	id := requestID(r.Header.Get(m.idHeader))
	w.Header().Set(m.idHeader, id)
	ctx := WithLogger(r.Context(), m.logger)
	ctx = tenancy.WithRequestID(ctx, id)
	ctx = tenancy.WithClient(ctx, tenancy.Client{IP: clientIP(r, m.trusted), UserAgent: userAgent(r)})
	r = r.WithContext(ctx)

	t, rest, err := m.resolve(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	next.ServeHTTP(w, rest.WithContext(tenancy.WithTenant(rest.Context(), t)))
}

// resolve returns the servable tenant that r names and the request to pass on.
func (m *middleware) resolve(r *http.Request) (*tenancy.Tenant, *http.Request, error) {
	slug, rest, err := m.find(r)
	if err != nil {
		return nil, nil, err
	}
	// A hostile slug must never reach the Resolver.
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, nil, err
	}
	t, err := m.resolver.ResolveSlug(r.Context(), slug)
	if err != nil {
		return nil, nil, fmt.Errorf("httpx: resolve tenant %q: %w", slug, err)
	}
	if t == nil || t.ID == uuid.Nil || t.Slug != slug {
		// Fail closed on a Resolver that breaks its contract.
		return nil, nil, fmt.Errorf("httpx: resolver answered slug %q with tenant %+v", slug, t)
	}
	if err := t.CheckServable(); err != nil {
		return nil, nil, err
	}
	return t, rest, nil
}

// find asks the sources in order, and returns the first slug found.
func (m *middleware) find(r *http.Request) (string, *http.Request, error) {
	for _, s := range m.sources {
		var (
			slug  string
			found bool
			rest  *http.Request
			err   error
		)
		if e, ok := s.(extractor); ok {
			slug, found, rest, err = e.extract(r)
		} else {
			slug, found, rest = s.Slug(r)
		}
		if err != nil {
			return "", nil, err
		}
		if found {
			if rest == nil {
				rest = r
			}
			return slug, rest, nil
		}
	}
	return "", nil, tenancy.Errorf(tenancy.CodeNoTenant, "this request names no tenant")
}
