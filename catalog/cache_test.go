package catalog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// notifyDeadline bounds how long a notification may take to reach a cache.
// Every cache below trusts its entries for an hour, so within this deadline
// only a notification (or a flush) can explain a change being seen.
const notifyDeadline = 5 * time.Second

// startCache starts a cache over cat that trusts its entries for an hour.
func startCache(t *testing.T, cat *catalog.Catalog) *catalog.Cache {
	t.Helper()
	c := catalog.NewCache(cat, catalog.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour})
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start cache: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// eventually polls cond until it returns "" or notifyDeadline passes, and then
// fails with cond's last explanation.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(notifyDeadline)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, notifyDeadline, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// statusIs returns a condition: the cache resolves slug to a tenant in status want.
func statusIs(c *catalog.Cache, slug string, want tenancy.Status) func() string {
	return func() string {
		got, err := c.ResolveSlug(context.Background(), slug)
		if err != nil {
			return "resolve: " + err.Error()
		}
		if got.Status != want {
			return "status " + string(got.Status) + ", want " + string(want)
		}
		return ""
	}
}

func mustResolve(t *testing.T, c *catalog.Cache, slug string) *tenancy.Tenant {
	t.Helper()
	tn, err := c.ResolveSlug(context.Background(), slug)
	if err != nil {
		t.Fatalf("ResolveSlug %s: %v", slug, err)
	}
	return tn
}

func TestCacheNotify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// Two app nodes, each with its own catalog handle and cache.
	node1, node2 := open(t, b.url), open(t, b.url)
	cache1, cache2 := startCache(t, node1), startCache(t, node2)

	t.Run("StatusChange", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelShared)
		for _, c := range []*catalog.Cache{cache1, cache2} {
			if got := mustResolve(t, c, tn.Slug); got.Status != tenancy.StatusActive {
				t.Fatalf("before: %+v", got)
			}
		}
		changed, err := node1.SetStatus(ctx, tn.ID, tenancy.StatusSuspended, tenancy.StatusActive)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "node 2 sees the suspension made on node 1", statusIs(cache2, tn.Slug, tenancy.StatusSuspended))
		eventually(t, "node 1 sees its own suspension", statusIs(cache1, tn.Slug, tenancy.StatusSuspended))
		got, err := cache2.ResolveID(ctx, tn.ID)
		if err != nil || got.Version != changed.Version {
			t.Fatalf("ResolveID on node 2: %+v, %v; want version %d", got, err, changed.Version)
		}
	})

	t.Run("ByID", func(t *testing.T) {
		t.Parallel()
		tn := b.createTenant(t, tenancy.ModelSchema)
		if got, err := cache2.ResolveID(ctx, tn.ID); err != nil || got.Status != tenancy.StatusActive {
			t.Fatalf("before: %+v, %v", got, err)
		}
		if _, err := node1.SetStatus(ctx, tn.ID, tenancy.StatusDeleted, tenancy.StatusActive); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node 2 sees the deletion by id", func() string {
			got, err := cache2.ResolveID(ctx, tn.ID)
			if err != nil {
				return err.Error()
			}
			if got.Status != tenancy.StatusDeleted || got.DeletedAt == nil {
				return "status " + string(got.Status)
			}
			return ""
		})
	})

	t.Run("NegativeEntryDroppedOnCreate", func(t *testing.T) {
		t.Parallel()
		tn := b.newTenant(tenancy.ModelShared)
		for range 2 { // the second answer comes from the negative entry
			_, err := cache2.ResolveSlug(ctx, tn.Slug)
			tenanttest.WantCode(t, "ResolveSlug before the tenant exists", err, tenancy.CodeNotFound)
		}
		if err := node1.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node 2 forgets that the slug was unknown", statusIs(cache2, tn.Slug, tenancy.StatusActive))
	})

	t.Run("NegativeIDEntryDroppedOnCreate", func(t *testing.T) {
		t.Parallel()
		tn := b.newTenant(tenancy.ModelShared)
		tn.ID = uuid.New()
		_, err := cache2.ResolveID(ctx, tn.ID)
		tenanttest.WantCode(t, "ResolveID before the tenant exists", err, tenancy.CodeNotFound)
		if err := node1.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node 2 forgets that the id was unknown", func() string {
			if _, err := cache2.ResolveID(ctx, tn.ID); err != nil {
				return err.Error()
			}
			return ""
		})
		// Dropping an unknown id by hand must work as well.
		cache2.Invalidate(uuid.New())
	})
}

func TestCacheStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// Not started, so that no notification drops an entry under the counts.
	c := catalog.NewCache(b.cat, catalog.CacheConfig{TTL: time.Hour, NegativeTTL: time.Hour})
	tn := b.createTenant(t, tenancy.ModelShared)

	want := func(hits, misses int64) {
		t.Helper()
		if st := c.Stats(); st.Hits != hits || st.Misses != misses {
			t.Fatalf("stats %+v, want %d hits and %d misses", st, hits, misses)
		}
	}
	want(0, 0)
	mustResolve(t, c, tn.Slug)
	want(0, 1)
	mustResolve(t, c, tn.Slug)
	want(1, 1)
	// A lookup by slug stores the tenant by id as well.
	if _, err := c.ResolveID(ctx, tn.ID); err != nil {
		t.Fatal(err)
	}
	want(2, 1)
	// Unknown slugs are counted, and the second lookup is a (negative) hit.
	for range 2 {
		if _, err := c.ResolveSlug(ctx, "no-such-tenant"); !errors.Is(err, tenancy.ErrNotFound) {
			t.Fatalf("unknown slug: %v", err)
		}
	}
	want(3, 2)
	// A malformed slug never reaches the cache.
	if _, err := c.ResolveSlug(ctx, `x"; --`); !errors.Is(err, tenancy.ErrInvalid) {
		t.Fatalf("malformed slug: %v", err)
	}
	want(3, 2)
	c.Flush()
	mustResolve(t, c, tn.Slug)
	want(3, 3)
}

func TestCacheTTLFallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	const ttl = 300 * time.Millisecond
	// Not started: nothing but the TTL can make it reload.
	c := catalog.NewCache(b.cat, catalog.CacheConfig{TTL: ttl, NegativeTTL: ttl})
	tn := b.createTenant(t, tenancy.ModelShared)

	cached := time.Now()
	mustResolve(t, c, tn.Slug)
	if _, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusSuspended, tenancy.StatusActive); err != nil {
		t.Fatal(err)
	}
	got := mustResolve(t, c, tn.Slug)
	if time.Since(cached) < ttl && got.Status != tenancy.StatusActive {
		t.Fatalf("an unstarted cache reloaded before its TTL: %+v", got)
	}
	time.Sleep(ttl - time.Since(cached) + 10*time.Millisecond)
	if got := mustResolve(t, c, tn.Slug); got.Status != tenancy.StatusSuspended {
		t.Fatalf("after the TTL: status %s, want suspended", got.Status)
	}

	// The negative TTL bounds "not found" the same way.
	later := b.newTenant(tenancy.ModelShared)
	cached = time.Now()
	if _, err := c.ResolveSlug(ctx, later.Slug); !errors.Is(err, tenancy.ErrNotFound) {
		t.Fatalf("unknown slug: %v", err)
	}
	if err := b.cat.CreateTenant(ctx, later); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResolveSlug(ctx, later.Slug); time.Since(cached) < ttl && err == nil {
		t.Fatal("an unstarted cache forgot a negative entry before its TTL")
	}
	time.Sleep(ttl - time.Since(cached) + 10*time.Millisecond)
	mustResolve(t, c, later.Slug)
}

// listenerPID returns the backend that LISTENs for catalog changes on the
// catalog database, waiting for one other than not to appear.
func listenerPID(t *testing.T, b *testBundle, not int32) int32 {
	t.Helper()
	var pid int32
	eventually(t, "a listener subscribes", func() string {
		err := b.cat.Pool().QueryRow(context.Background(), `
			SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> $1`, not).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return "no listening backend"
		}
		if err != nil {
			t.Fatalf("find the listener: %v", err)
		}
		return ""
	})
	return pid
}

func TestCacheListenerReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	// Created before the cache starts, so that its notification cannot drop
	// the entry below.
	tn := b.createTenant(t, tenancy.ModelShared)
	c := startCache(t, open(t, b.url))
	mustResolve(t, c, tn.Slug)

	// A change whose notification is lost: the row is updated with its
	// triggers off, as if the listener had been down.
	if _, err := b.cat.Pool().Exec(ctx, `
		BEGIN;
		SET LOCAL session_replication_role = replica;
		UPDATE catalog.tenants SET name = 'renamed while nobody listened' WHERE id = '`+tn.ID.String()+`';
		COMMIT`); err != nil {
		t.Fatal(err)
	}
	if got := mustResolve(t, c, tn.Slug); got.Name != tn.Name {
		t.Fatalf("the cache saw a change that sent no notification: %+v", got)
	}

	old := listenerPID(t, b, 0)
	var killed bool
	if err := b.cat.Pool().QueryRow(ctx, `SELECT pg_terminate_backend($1)`, old).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate the listener %d: %v, %v", old, killed, err)
	}
	// Losing the connection flushes the cache: the missed change shows.
	eventually(t, "the cache flushes after losing its listener", func() string {
		if got := mustResolve(t, c, tn.Slug); got.Name != "renamed while nobody listened" {
			return "name " + got.Name
		}
		return ""
	})
	// And the cache subscribes again: a later change is seen at once.
	listenerPID(t, b, old)
	mustResolve(t, c, tn.Slug)
	if _, err := b.cat.SetStatus(ctx, tn.ID, tenancy.StatusSuspended, tenancy.StatusActive); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache follows changes after reconnecting", statusIs(c, tn.Slug, tenancy.StatusSuspended))
}

func TestCacheStartCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := catalog.NewCache(b.cat, catalog.CacheConfig{})
	if err := c.Start(ctx); err == nil {
		c.Close()
		t.Fatal("Start with a canceled context succeeded")
	}
	c.Close() // closing a cache that failed to start is harmless
}
