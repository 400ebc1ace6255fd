package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// TTL bounds how long an entry is trusted without a notification, the
	// fallback for notifications missed while the listener was down. Default 30s.
	TTL time.Duration
	// NegativeTTL is how long "no such tenant" is remembered, so that requests
	// for unknown slugs do not all reach the catalog. Default 2s.
	NegativeTTL time.Duration
	// Logger receives listener errors. Nil: discard.
	Logger *slog.Logger
}

// Cache answers tenant lookups from memory. Each process has one; every catalog
// change reaches it through LISTEN/NOTIFY and drops the changed tenant.
type Cache struct {
	cat *Catalog
	cfg CacheConfig

	mu     sync.RWMutex
	bySlug map[string]cacheEntry
	byID   map[uuid.UUID]cacheEntry
	// gen counts invalidations; a lookup that raced one does not store its result.
	gen atomic.Uint64

	hits, misses atomic.Int64
	stale        atomic.Int64 // lookups answered from a stale entry: the catalog was unreachable

	limits limitsCache // see plans.go

	cancel context.CancelFunc
	done   chan struct{}
}

type cacheEntry struct {
	t       *tenancy.Tenant // nil: known not to exist
	expires time.Time
}

// NewCache returns a cache over cat. Call Start to follow catalog changes.
func NewCache(cat *Catalog, cfg CacheConfig) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{cat: cat, cfg: cfg, bySlug: map[string]cacheEntry{}, byID: map[uuid.UUID]cacheEntry{}}
}

// Start begins listening for catalog changes and returns once the listener is
// subscribed, so that every change committed afterwards reaches the cache. The
// listener reconnects by itself; Close stops it.
func (c *Cache) Start(ctx context.Context) error {
	ready := make(chan error, 1)
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel, c.done = cancel, make(chan struct{})
	go c.listen(lctx, ready)
	select {
	case err := <-ready:
		if err != nil {
			cancel()
			<-c.done
		}
		return err
	case <-ctx.Done():
		cancel()
		<-c.done
		return ctx.Err()
	}
}

// Close stops the listener.
func (c *Cache) Close() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

func (c *Cache) listen(ctx context.Context, ready chan<- error) {
	defer close(c.done)
	backoff := 100 * time.Millisecond
	subscribed := false // Start has returned: from now on, reconnect
	for {
		err := c.listenOnce(ctx, func() {
			if !subscribed {
				subscribed = true
				ready <- nil
			}
			backoff = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return
		}
		if !subscribed {
			ready <- err
			return
		}
		// Notifications may have been missed: nothing cached is trusted any
		// more, but it is kept to serve known tenants while the catalog is
		// unreachable (see resolve). The next subscription flushes it.
		c.expire()
		c.cfg.Logger.Warn("catalog listener lost its connection; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *Cache) listenOnce(ctx context.Context, subscribed func()) error {
	conn, err := c.cat.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool for good: it stays subscribed.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	c.Flush() // anything cached before the subscription may be stale
	subscribed()
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var p struct {
			ID    uuid.UUID `json:"id"`
			Slug  string    `json:"slug"`
			Plans bool      `json:"plans"` // a plan changed: see plans.go
		}
		if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
			c.Flush()
			continue
		}
		if p.Plans {
			c.limits.flush()
			continue
		}
		c.invalidate(p.ID, p.Slug)
	}
}

// Invalidate drops a tenant from the cache.
func (c *Cache) Invalidate(id uuid.UUID) { c.invalidate(id, "") }

func (c *Cache) invalidate(id uuid.UUID, slug string) {
	c.mu.Lock()
	c.gen.Add(1)
	if e, ok := c.byID[id]; ok && e.t != nil { // e.t is nil in a negative entry
		delete(c.bySlug, e.t.Slug)
	}
	delete(c.byID, id)
	if slug != "" {
		delete(c.bySlug, slug)
	}
	c.mu.Unlock()
	c.limits.invalidate(id)
}

// Flush drops every entry.
func (c *Cache) Flush() {
	c.mu.Lock()
	c.gen.Add(1)
	clear(c.bySlug)
	clear(c.byID)
	c.mu.Unlock()
	c.limits.flush()
}

// expire marks every entry stale: the next lookup asks the catalog, and gets
// the stale entry only if the catalog cannot answer.
func (c *Cache) expire() {
	c.mu.Lock()
	c.gen.Add(1)
	for k, e := range c.bySlug {
		e.expires = time.Time{}
		c.bySlug[k] = e
	}
	for k, e := range c.byID {
		e.expires = time.Time{}
		c.byID[k] = e
	}
	c.mu.Unlock()
	c.limits.expire()
}

// ResolveSlug returns the tenant with the given slug, from memory when
// possible. The error has code CodeInvalid for a malformed slug and
// CodeNotFound for an unknown one.
func (c *Cache) ResolveSlug(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, err
	}
	c.mu.RLock()
	e, ok := c.bySlug[slug]
	c.mu.RUnlock()
	return c.resolve(e, ok, func() (*tenancy.Tenant, error) { return c.cat.TenantBySlug(ctx, slug) },
		func(e cacheEntry) { c.bySlug[slug] = e }, slug)
}

// ResolveID returns the tenant with the given id, from memory when possible.
func (c *Cache) ResolveID(ctx context.Context, id uuid.UUID) (*tenancy.Tenant, error) {
	c.mu.RLock()
	e, ok := c.byID[id]
	c.mu.RUnlock()
	return c.resolve(e, ok, func() (*tenancy.Tenant, error) { return c.cat.Tenant(ctx, id) },
		func(e cacheEntry) { c.byID[id] = e }, id.String())
}

func (c *Cache) resolve(e cacheEntry, ok bool, load func() (*tenancy.Tenant, error), storeMiss func(cacheEntry), name string) (*tenancy.Tenant, error) {
	now := time.Now()
	if ok && now.Before(e.expires) {
		c.hits.Add(1)
		if e.t == nil {
			return nil, tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", name)
		}
		return e.t, nil
	}
	c.misses.Add(1)
	gen := c.gen.Load()
	t, err := load()
	if err != nil && !errors.Is(err, tenancy.ErrNotFound) {
		if ok && e.t != nil {
			// The catalog cannot answer: a known tenant is served as last
			// seen rather than not at all.
			c.stale.Add(1)
			return e.t, nil
		}
		if tenancy.ErrorCode(err) == tenancy.CodeInternal {
			err = tenancy.Errorf(tenancy.CodeUnavailable, "the catalog cannot be reached to look up tenant %q; retry later: %w", name, err)
		}
		return nil, err
	}
	c.mu.Lock()
	if c.gen.Load() == gen { // no invalidation raced the load
		if t == nil {
			storeMiss(cacheEntry{expires: now.Add(c.cfg.NegativeTTL)})
		} else {
			e := cacheEntry{t: t, expires: now.Add(c.cfg.TTL)}
			c.bySlug[t.Slug] = e
			c.byID[t.ID] = e
		}
	}
	c.mu.Unlock()
	return t, err
}

// CacheStats counts lookups answered from memory and from the catalog, and
// those answered from a stale entry because the catalog could not be reached
// (counted among the misses too).
type CacheStats struct{ Hits, Misses, Stale int64 }

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load()}
}
