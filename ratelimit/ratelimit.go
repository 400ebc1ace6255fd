package ratelimit

import (
	"context"
	"math"
	"time"

	"github.com/tenancyhq/tenancy"
)

// Limit is a rate with a burst: on average Rate decisions per second are
// allowed, and up to Burst at once after a quiet period. The zero Limit (Rate
// 0) allows everything.
type Limit struct {
	// Rate is the sustained rate, in decisions per second.
	Rate float64
	// Burst is how many decisions may be allowed at once; at least 1 when Rate
	// is set.
	Burst int
}

// PerSecond returns a Limit of rate per second with the given burst.
func PerSecond(rate float64, burst int) Limit { return Limit{Rate: rate, Burst: burst} }

// FromLimits returns the request limit of a tenant's limits.
func FromLimits(l tenancy.Limits) Limit { return Limit{Rate: l.RPS, Burst: l.Burst} }

// Unlimited reports whether l allows everything.
func (l Limit) Unlimited() bool { return l.Rate == 0 }

// Validate returns an error with code CodeInvalid unless l is the zero Limit
// or has a finite positive rate of at most 1e6 per second and a burst from 1
// to 1e6.
func (l Limit) Validate() error {
	if l.Rate == 0 && l.Burst == 0 {
		return nil
	}
	if !(l.Rate > 0 && l.Rate <= 1e6) || l.Burst < 1 || l.Burst > 1e6 {
		return tenancy.Errorf(tenancy.CodeInvalid, "ratelimit: invalid limit: rate %v per second, burst %d (want a rate in (0, 1e6] and a burst in [1, 1e6])", l.Rate, l.Burst)
	}
	return nil
}

// emission is the time one decision uses up: the GCRA emission interval.
func (l Limit) emission() time.Duration {
	return max(time.Duration(math.Round(float64(time.Second)/l.Rate)), time.Microsecond)
}

// Result is one decision.
type Result struct {
	// Allowed says whether the decision was allowed (and counted).
	Allowed bool
	// Limit is the limit the decision was made under.
	Limit Limit
	// Remaining is how many more decisions would be allowed right now.
	Remaining int
	// RetryAfter is, when denied, how long until the next decision can be
	// allowed; 0 when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to its full burst.
	ResetAfter time.Duration
}

// Limiter decides, per key, whether one more event fits the key's limit. It is
// safe for concurrent use.
//
// Both implementations, Local and Redis, run the generic cell rate algorithm
// (GCRA) and make the same decisions for the same sequence of calls: each key
// has a theoretical arrival time that every allowed decision pushes one
// emission interval (1/Rate) later, and a decision is allowed while that time
// is less than Burst intervals ahead of now.
type Limiter interface {
	// Allow decides one event of key under limit. An invalid limit gives an
	// error with code CodeInvalid. A key's limit may change between calls;
	// the state carries over.
	Allow(ctx context.Context, key string, limit Limit) (Result, error)
}

// decide is GCRA: given the key's stored theoretical arrival time tat (zero
// when none) and now, it returns the decision and the time to store, also
// when denied. Times are in any unit, as long as emission is in the same.
//
// The stored time is first capped at a whole burst ahead of now. Under an
// unchanged limit it never is further ahead; after the limit was raised, the
// cap makes a key that had used its whole burst start again from an empty
// burst at the new rate, instead of paying off its debt at the old one. The
// capped time must be stored even on a denial, or the cap would move with now
// and the key would never refill.
func decide(tat, now, emission int64, burst int) (allowed bool, newTAT, remaining, retryAfter, resetAfter int64) {
	tat = min(max(tat, now), now+emission*int64(burst))
	newTAT = tat + emission
	allowAt := newTAT - emission*int64(burst)
	if now < allowAt {
		return false, tat, 0, allowAt - now, tat - now
	}
	return true, newTAT, (now - allowAt) / emission, 0, newTAT - now
}
