package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenancyhq/tenancy"
)

// gcraScript is GCRA on Redis, with Redis's own clock, so that app nodes whose
// clocks differ share one budget. Times are microseconds. It stores the key's
// theoretical arrival time, expiring when the key is back to its full burst,
// and returns {allowed, remaining, retry_after, reset_after}. It is decide,
// in Lua.
var gcraScript = redis.NewScript(`
if redis.replicate_commands then pcall(redis.replicate_commands) end
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local capped = tat > now + emission * burst
if capped then tat = now + emission * burst end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if now < allow_at then
	if capped then
		redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
	end
	return {0, 0, allow_at - now, tat - now}
end
local reset = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(reset / 1000))
return {1, math.floor((now - allow_at) / emission), 0, reset}
`)

// RedisConfig configures a Redis limiter.
type RedisConfig struct {
	// Client is the Redis client shared by every app node (a *redis.Client,
	// *redis.ClusterClient or *redis.Ring). Required. Its options bound how
	// long a decision waits for an unavailable Redis, once per RetryInterval
	// and node: keep DialTimeout and ReadTimeout short (say 100ms),
	// MaxRetries low, and DialerRetries at 1. go-redis otherwise tries a
	// refused dial 5 times, 100ms apart (DialerRetries, DialerRetryTimeout),
	// so that requests wait at least 400ms whatever DialTimeout says. go-redis
	// reports failed dials through its own logger (see redis.SetLogger), not
	// Logger.
	Client redis.Scripter
	// Prefix is put before every key. Default "tenancy:ratelimit:".
	Prefix string
	// FailClosed denies every decision while Redis is unavailable, with an
	// error of code CodeUnavailable. The default, false, fails open: decisions
	// are made by Fallback, this node's own budget.
	FailClosed bool
	// Fallback decides while Redis is unavailable, unless FailClosed. Default:
	// a new Local.
	Fallback Limiter
	// RetryInterval is how long decisions go to the fallback after Redis
	// failed, before one decision tries Redis again (the others keep to the
	// fallback until it answers). Default 1s.
	RetryInterval time.Duration
	// Logger receives one warning when Redis becomes unavailable and one
	// message when it is back. Nil: discard.
	Logger *slog.Logger
}

// Redis is a Limiter whose state lives in Redis: every app node that uses the
// same Redis and prefix shares one budget per key. A decision is one round
// trip (EVALSHA of a GCRA script; the script is sent again only when Redis has
// forgotten it).
type Redis struct {
	cfg RedisConfig

	downUntil atomic.Int64 // unix nanoseconds; Redis is not tried before
	probing   atomic.Bool  // one decision is trying Redis again after an outage
	mu        sync.Mutex   // serializes the log lines of an outage
	down      bool

	failures, fallbacks, denials atomic.Int64
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a Redis limiter. It does not contact Redis.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Client == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "ratelimit: RedisConfig.Client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "tenancy:ratelimit:"
	}
	if cfg.Fallback == nil {
		cfg.Fallback = NewLocal()
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Redis{cfg: cfg}, nil
}

// Allow decides one event of key under limit; see Limiter. While Redis is
// unavailable it answers as RedisConfig.FailClosed says, and tries Redis again
// every RetryInterval.
func (r *Redis) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	if err := limit.Validate(); err != nil {
		return Result{}, err
	}
	if limit.Unlimited() {
		return Result{Allowed: true, Limit: limit}, nil
	}
	if until := r.downUntil.Load(); until != 0 {
		// Down: once RetryInterval has passed, one decision tries Redis
		// again while the others keep deciding without it, so that a
		// Redis still down stalls one request, not every one in flight.
		if time.Now().UnixNano() < until || !r.probing.CompareAndSwap(false, true) {
			return r.unavailable(ctx, key, limit)
		}
		defer r.probing.Store(false)
	}
	res, err := r.eval(ctx, key, limit)
	if err != nil {
		if ctx.Err() != nil { // the caller gave up: not Redis's fault
			return Result{}, ctx.Err()
		}
		r.failed(err)
		return r.unavailable(ctx, key, limit)
	}
	r.recovered()
	return res, nil
}

func (r *Redis) eval(ctx context.Context, key string, limit Limit) (Result, error) {
	emission := max(limit.emission().Microseconds(), 1)
	v, err := gcraScript.Run(ctx, r.cfg.Client, []string{r.cfg.Prefix + key},
		strconv.FormatInt(emission, 10), strconv.Itoa(limit.Burst)).Int64Slice()
	if err != nil {
		return Result{}, err
	}
	if len(v) != 4 {
		return Result{}, errors.New("ratelimit: unexpected answer from the redis script")
	}
	return Result{
		Allowed:    v[0] == 1,
		Limit:      limit,
		Remaining:  int(v[1]),
		RetryAfter: time.Duration(v[2]) * time.Microsecond,
		ResetAfter: time.Duration(v[3]) * time.Microsecond,
	}, nil
}

// unavailable decides while Redis is unavailable.
func (r *Redis) unavailable(ctx context.Context, key string, limit Limit) (Result, error) {
	if r.cfg.FailClosed {
		r.denials.Add(1)
		retry := time.Duration(r.downUntil.Load() - time.Now().UnixNano())
		return Result{Limit: limit, RetryAfter: max(retry, time.Millisecond)},
			tenancy.Errorf(tenancy.CodeUnavailable, "rate limiter unavailable; retry later")
	}
	r.fallbacks.Add(1)
	return r.cfg.Fallback.Allow(ctx, key, limit)
}

func (r *Redis) failed(err error) {
	r.failures.Add(1)
	r.downUntil.Store(time.Now().Add(r.cfg.RetryInterval).UnixNano())
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		r.down = true
		mode := "failing open to this node's local limiter"
		if r.cfg.FailClosed {
			mode = "failing closed: denying every request"
		}
		r.cfg.Logger.Warn("ratelimit: redis unavailable; "+mode, "err", err, "retry_every", r.cfg.RetryInterval)
	}
}

func (r *Redis) recovered() {
	if r.downUntil.Load() == 0 {
		return
	}
	r.downUntil.Store(0)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		r.down = false
		r.cfg.Logger.Info("ratelimit: redis is available again")
	}
}

// RedisStats counts what a Redis limiter did without Redis.
type RedisStats struct {
	// Down says whether Redis is currently taken as unavailable.
	Down bool
	// Failures counts calls to Redis that failed.
	Failures int64
	// Fallbacks counts decisions made by the fallback limiter (fail open).
	Fallbacks int64
	// Denials counts decisions denied because Redis was unavailable (fail
	// closed).
	Denials int64
}

// Stats returns the limiter's counters, to export as metrics.
func (r *Redis) Stats() RedisStats {
	r.mu.Lock()
	down := r.down
	r.mu.Unlock()
	return RedisStats{Down: down, Failures: r.failures.Load(), Fallbacks: r.fallbacks.Load(), Denials: r.denials.Load()}
}
