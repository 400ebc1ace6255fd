package httpx

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// LimitsSource returns a tenant's limits; the catalog's Cache implements it.
type LimitsSource interface {
	Limits(ctx context.Context, t *tenancy.Tenant) (tenancy.Limits, error)
}

// LimitConfig configures Limit.
type LimitConfig struct {
	// Limiter makes the decisions: a ratelimit.Local for one app node, a
	// ratelimit.Redis to share each tenant's budget across nodes. Required.
	Limiter ratelimit.Limiter
	// Limits gives each tenant's requests per second and burst (its plan).
	// Required.
	Limits LimitsSource
	// Class, when set, names the route class of a request (for example
	// "search" or "export"): each class of a tenant then has a budget of its
	// own, at the tenant's limits, so that a flood of one class leaves the
	// others alone. A class is 1 to 32 of [a-z0-9_-], starting with a letter;
	// "" (and a nil Class) is the tenant's default budget. Any other name is
	// a bug in Class, answered 500.
	Class func(*http.Request) string
}

// Limit returns net/http middleware that applies each tenant's request limit.
// It runs after Middleware, which resolves the tenant: resolve → limit →
// handler. A request without a tenant in its context is refused (400,
// CodeNoTenant), never served unlimited.
//
// Every limited response carries the IETF RateLimit-Policy and RateLimit
// headers (draft-ietf-httpapi-ratelimit-headers): the policy's quota q is the
// burst and its window w the seconds the burst takes to refill; r is what
// remains now and t the seconds until the whole burst is back. A request over
// the limit is answered 429 with Retry-After (whole seconds, at least 1) and a
// problem of code CodeRateLimited. When the limiter cannot decide (a Redis
// limiter failing closed) the answer is 503 with Retry-After. Tenants whose
// plan has no rate are not limited and get no headers.
//
// It returns an error with code CodeInvalid when cfg lacks its Limiter or its
// Limits.
func Limit(cfg LimitConfig) (func(http.Handler) http.Handler, error) {
	if cfg.Limiter == nil || cfg.Limits == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "httpx: LimitConfig.Limiter and LimitConfig.Limits are required")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := cfg.limit(w, r); err != nil {
				WriteError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

var classPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// limit decides r, sets the headers, and returns why r must not be served.
func (cfg *LimitConfig) limit(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, ok := tenancy.TenantFromContext(ctx)
	if !ok {
		return tenancy.Errorf(tenancy.CodeNoTenant, "this request names no tenant")
	}
	l, err := cfg.Limits.Limits(ctx, t)
	if err != nil {
		return fmt.Errorf("httpx: limits of tenant %q: %w", t.Slug, err)
	}
	lim := ratelimit.FromLimits(l)
	if lim.Unlimited() {
		return nil
	}
	key, policy := t.ID.String(), "tenant"
	if cfg.Class != nil {
		if class := cfg.Class(r); class != "" {
			if !classPattern.MatchString(class) {
				return fmt.Errorf("httpx: LimitConfig.Class answered an invalid class %q", class)
			}
			key, policy = key+":"+class, class
		}
	}
	res, err := cfg.Limiter.Allow(ctx, key, lim)
	if err != nil {
		if res.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(seconds(res.RetryAfter)))
		}
		return fmt.Errorf("httpx: rate limit of tenant %q: %w", t.Slug, err)
	}
	h := w.Header()
	window := max(int(math.Ceil(float64(lim.Burst)/lim.Rate)), 1)
	h.Set("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=%d", policy, lim.Burst, window))
	h.Set("RateLimit", fmt.Sprintf("%q;r=%d;t=%d", policy, res.Remaining, seconds(res.ResetAfter)))
	if !res.Allowed {
		retry := seconds(res.RetryAfter)
		h.Set("Retry-After", strconv.Itoa(retry))
		return tenancy.Errorf(tenancy.CodeRateLimited, "tenant %q is over its limit of %g requests per second (burst %d); retry in %ds", t.Slug, lim.Rate, lim.Burst, retry)
	}
	return nil
}

// seconds rounds d up to whole seconds, at least 1: HTTP clients retrying
// after 0 seconds would only be refused again.
func seconds(d time.Duration) int {
	return max(int((d+time.Second-1)/time.Second), 1)
}
