package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// shards spreads the keys of a Local over this many locks.
const shards = 64

// sweepEvery is how many decisions a shard makes between sweeps of its
// expired keys.
const sweepEvery = 4096

// Local is an in-process Limiter: one app node's budget. A decision on a key
// seen before allocates nothing.
type Local struct {
	seed   maphash.Seed
	base   time.Time
	shards [shards]localShard
}

type localShard struct {
	mu    sync.Mutex
	tats  map[string]int64 // theoretical arrival time, in nanoseconds since base
	count int
	_     [40]byte // keeps shards on their own cache lines
}

// NewLocal returns an in-process limiter.
func NewLocal() *Local {
	l := &Local{seed: maphash.MakeSeed(), base: time.Now()}
	for i := range l.shards {
		l.shards[i].tats = map[string]int64{}
	}
	return l
}

var _ Limiter = (*Local)(nil)

// Allow decides one event of key under limit; see Limiter.
func (l *Local) Allow(_ context.Context, key string, limit Limit) (Result, error) {
	if err := limit.Validate(); err != nil {
		return Result{}, err
	}
	if limit.Unlimited() {
		return Result{Allowed: true, Limit: limit}, nil
	}
	return l.allowAt(key, limit, int64(time.Since(l.base))), nil
}

// allowAt decides at now, in nanoseconds since l.base, for a valid limited
// limit.
func (l *Local) allowAt(key string, limit Limit, now int64) Result {
	emission := int64(limit.emission())
	s := &l.shards[maphash.String(l.seed, key)%shards]
	s.mu.Lock()
	allowed, tat, remaining, retry, reset := decide(s.tats[key], now, emission, limit.Burst)
	s.tats[key] = tat
	if s.count++; s.count%sweepEvery == 0 {
		s.sweep(now)
	}
	s.mu.Unlock()
	return Result{
		Allowed:    allowed,
		Limit:      limit,
		Remaining:  int(remaining),
		RetryAfter: time.Duration(retry),
		ResetAfter: time.Duration(reset),
	}
}

// sweep forgets the keys whose arrival time has passed: they are back to their
// full burst, as keys never seen are.
func (s *localShard) sweep(now int64) {
	for k, tat := range s.tats {
		if tat <= now {
			delete(s.tats, k)
		}
	}
}

// Len returns how many keys the limiter holds state for.
func (l *Local) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}
