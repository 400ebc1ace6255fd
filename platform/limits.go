package platform

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/ratelimit"
	"github.com/tenancyhq/tenancy/router"
)

// LimitsConfig turns on the enforcement of each tenant's limits: the plan of
// its tier in the catalog, with its overrides (see catalog.Plan). The router
// then caps the tenant's concurrent transactions and sets its statement
// timeout, and Platform.LimitMiddleware limits its requests. A change of plan
// applies on every app node without a restart.
type LimitsConfig struct {
	// Redis, when set, keeps request budgets in Redis, so that every app node
	// shares one budget per tenant. Nil: each node has its own (ratelimit.Local).
	// Give its client short timeouts and DialerRetries 1, or requests wait
	// for an unavailable Redis (see ratelimit.RedisConfig.Client).
	Redis redis.Scripter
	// FailClosed answers 503 while Redis is unavailable; by default requests
	// are limited by each node's own budget meanwhile. See
	// ratelimit.RedisConfig.
	FailClosed bool
	// TxWait and TxQueue bound the wait for a tenant's transaction slot; see
	// router.Config. Defaults 1s and 64.
	TxWait  time.Duration
	TxQueue int
	// Class names a request's route class, each with its own budget; see
	// httpx.LimitConfig.
	Class func(*http.Request) string
}

// limitRouter adds the limits to the router's configuration, and builds the
// platform's request limiter.
func (p *Platform) limitRouter(rc *router.Config, lc *LimitsConfig, logger *slog.Logger) error {
	if lc == nil {
		return nil
	}
	rc.Limits, rc.TxWait, rc.TxQueue = p.Cache, lc.TxWait, lc.TxQueue
	p.limits = lc
	if lc.Redis == nil {
		p.Limiter = ratelimit.NewLocal()
		return nil
	}
	l, err := ratelimit.NewRedis(ratelimit.RedisConfig{Client: lc.Redis, FailClosed: lc.FailClosed, Logger: logger})
	if err != nil {
		return err
	}
	p.Limiter = l
	return nil
}

// LimitMiddleware returns the middleware that applies each tenant's request
// limit (httpx.Limit); chain it after the tenant resolution: resolve → limit →
// handler. It fails with CodeInvalid unless Config.Limits was set.
func (p *Platform) LimitMiddleware() (func(http.Handler) http.Handler, error) {
	if p.Limiter == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "platform: limits are off; set Config.Limits")
	}
	return httpx.Limit(httpx.LimitConfig{Limiter: p.Limiter, Limits: p.Cache, Class: p.limits.Class})
}
