package catalog_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/ratelimit"
)

func ptr[T any](v T) *T { return &v }

func TestPlansSeeded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	plans, err := b.cat.Plans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var tiers []tenancy.Tier
	for _, p := range plans {
		tiers = append(tiers, p.Tier)
		if err := p.Limits.Validate(); err != nil || p.Limits.RPS == 0 || p.Limits.MaxConcurrentTx == 0 || p.Limits.StatementTimeout == 0 {
			t.Errorf("seeded plan %s: %v (%v)", p.Tier, p.Limits, err)
		}
	}
	if len(tiers) != 3 || tiers[0] != "enterprise" || tiers[1] != "free" || tiers[2] != "pro" {
		t.Fatalf("seeded tiers %v, want enterprise, free, pro", tiers)
	}
	free, _ := b.cat.Plan(context.Background(), "free")
	pro, _ := b.cat.Plan(context.Background(), "pro")
	if !(free.Limits.RPS < pro.Limits.RPS && free.Limits.MaxConcurrentTx < pro.Limits.MaxConcurrentTx) {
		t.Errorf("free %v is not below pro %v", free.Limits, pro.Limits)
	}
	_, err = b.cat.Plan(context.Background(), "gold")
	tenanttest.WantCode(t, "unknown plan", err, tenancy.CodeNotFound)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	tn := b.createTenant(t, tenancy.ModelShared)
	free, err := b.cat.Plan(ctx, "free")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("PlanOfTier", func(t *testing.T) {
		l, err := b.cat.Limits(ctx, tn)
		if err != nil || l != free.Limits {
			t.Fatalf("limits %v (%v), want the free plan's %v", l, err, free.Limits)
		}
	})
	t.Run("UnknownTierFallsBack", func(t *testing.T) {
		odd := *tn
		odd.Tier = "platinum"
		l, err := b.cat.Limits(ctx, &odd)
		if err != nil || l != free.Limits {
			t.Fatalf("limits of an unknown tier %v (%v), want the fallback plan's %v", l, err, free.Limits)
		}
	})
	t.Run("Overrides", func(t *testing.T) {
		other := b.createTenant(t, tenancy.ModelShared)
		o := catalog.Overrides{MaxConcurrentTx: ptr(1), StatementTimeout: ptr(250 * time.Millisecond), DBTime: ptr(0.25)}
		if err := b.cat.SetOverrides(ctx, tn.ID, o); err != nil {
			t.Fatal(err)
		}
		got, err := b.cat.Overrides(ctx, tn.ID)
		if err != nil || *got.MaxConcurrentTx != 1 || *got.StatementTimeout != 250*time.Millisecond || *got.DBTime != 0.25 || got.RPS != nil || got.Burst != nil {
			t.Fatalf("overrides read back %+v (%v)", got, err)
		}
		want := free.Limits
		want.MaxConcurrentTx, want.StatementTimeout, want.DBTime = 1, 250*time.Millisecond, 0.25
		if l, err := b.cat.Limits(ctx, tn); err != nil || l != want {
			t.Fatalf("limits with overrides %v (%v), want %v", l, err, want)
		}
		if l, err := b.cat.Limits(ctx, other); err != nil || l != free.Limits {
			t.Fatalf("another tenant's limits %v (%v), want its plan's", l, err)
		}
		if err := b.cat.SetOverrides(ctx, tn.ID, catalog.Overrides{}); err != nil {
			t.Fatal(err)
		}
		if l, err := b.cat.Limits(ctx, tn); err != nil || l != free.Limits {
			t.Fatalf("limits after clearing overrides %v (%v)", l, err)
		}
	})
	t.Run("BadInput", func(t *testing.T) {
		if err := b.cat.SetOverrides(ctx, tn.ID, catalog.Overrides{Burst: ptr(7)}); err != nil {
			t.Fatal(err)
		}
		before, _ := b.cat.Limits(ctx, tn)
		bad := map[string]catalog.Overrides{
			"NegativeRPS":        {RPS: ptr(-1.0)},
			"NaNRPS":             {RPS: ptr(math.NaN())},
			"BurstWithoutRate":   {RPS: ptr(0.0)},
			"NegativeTx":         {MaxConcurrentTx: ptr(-3)},
			"SubMillisecond":     {StatementTimeout: ptr(1500 * time.Microsecond)},
			"NegativeTimeout":    {StatementTimeout: ptr(-time.Second)},
			"TimeoutOverADay":    {StatementTimeout: ptr(25 * time.Hour)},
			"RateWithoutBurst":   {Burst: ptr(0)},
			"InfiniteRate":       {RPS: ptr(math.Inf(1))},
			"NegativeBurstOnPro": {Burst: ptr(-1)},
			"NegativeDBTime":     {DBTime: ptr(-0.5)},
			"NaNDBTime":          {DBTime: ptr(math.NaN())},
			"DBTimeOver1000":     {DBTime: ptr(1001.0)},
		}
		for name, o := range bad {
			tenanttest.WantCode(t, name, b.cat.SetOverrides(ctx, tn.ID, o), tenancy.CodeInvalid)
		}
		if after, _ := b.cat.Limits(ctx, tn); after != before {
			t.Fatalf("limits changed by refused overrides: %v, was %v", after, before)
		}
		tenanttest.WantCode(t, "overrides of an unknown tenant", b.cat.SetOverrides(ctx, uuid.New(), catalog.Overrides{Burst: ptr(1)}), tenancy.CodeNotFound)
		badPlans := map[string]*catalog.Plan{
			"BadTier":     {Tier: "Gold Plan", Limits: tenancy.Limits{RPS: 1, Burst: 1}},
			"EmptyTier":   {Tier: "", Limits: tenancy.Limits{RPS: 1, Burst: 1}},
			"RateNoBurst": {Tier: "free", Limits: tenancy.Limits{RPS: 1}},
			"NegativeTx":  {Tier: "free", Limits: tenancy.Limits{MaxConcurrentTx: -1}},
			"InfDBTime":   {Tier: "free", Limits: tenancy.Limits{DBTime: math.Inf(1)}},
		}
		for name, p := range badPlans {
			tenanttest.WantCode(t, name, b.cat.SetPlan(ctx, p), tenancy.CodeInvalid)
		}
		if p, _ := b.cat.Plan(ctx, "free"); p.Limits != free.Limits {
			t.Fatalf("free plan changed by refused input: %v", p.Limits)
		}
	})
}

// TestCacheLimitsFollowChanges proves that a change of a plan, of a tenant's
// overrides and of its tier reaches a cache in another process through the
// catalog's notifications, though the cache trusts its entries for an hour.
func TestCacheLimitsFollowChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	tn := b.createTenant(t, tenancy.ModelShared)
	c := startCache(t, open(t, b.url))
	limitsAre := func(want func(tenancy.Limits) bool) func() string {
		return func() string {
			cur, err := c.ResolveID(ctx, tn.ID)
			if err != nil {
				return err.Error()
			}
			l, err := c.Limits(ctx, cur)
			if err != nil {
				return err.Error()
			}
			if !want(l) {
				return "limits " + l.String()
			}
			return ""
		}
	}
	eventually(t, "first read", limitsAre(func(l tenancy.Limits) bool { return l.RPS == 10 }))

	// A plan change reaches the cache.
	if err := b.cat.SetPlan(ctx, &catalog.Plan{Tier: "free", Limits: tenancy.Limits{RPS: 3, Burst: 4, MaxConcurrentTx: 2, StatementTimeout: time.Second}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "plan change", limitsAre(func(l tenancy.Limits) bool { return l.RPS == 3 && l.Burst == 4 }))

	// An override reaches it.
	if err := b.cat.SetOverrides(ctx, tn.ID, catalog.Overrides{MaxConcurrentTx: ptr(9)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "override", limitsAre(func(l tenancy.Limits) bool { return l.MaxConcurrentTx == 9 && l.RPS == 3 }))

	// A change of tier reaches it.
	if _, err := b.cat.Pool().Exec(ctx, `UPDATE catalog.tenants SET tier = 'pro' WHERE id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tier change", limitsAre(func(l tenancy.Limits) bool { return l.RPS == 100 && l.MaxConcurrentTx == 9 }))
}

// TestPlanLimitsAreEnforceable: a plan the catalog accepts is one the rate
// limiter can enforce. Otherwise the limiter refuses the limit on every
// request of the plan's tenants, with CodeInvalid (400), as if each request
// were at fault.
func TestPlanLimitsAreEnforceable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, l := range []tenancy.Limits{
		{RPS: 2e6, Burst: 10},
		{RPS: 10, Burst: 2_000_000},
	} {
		err := b.cat.SetPlan(ctx, &catalog.Plan{Tier: "huge", Limits: l})
		if err == nil {
			if _, aErr := ratelimit.NewLocal().Allow(ctx, "k", ratelimit.FromLimits(l)); aErr != nil {
				t.Errorf("plan %v: accepted, but the rate limiter refuses it: %v", l, aErr)
			}
			continue
		}
		tenanttest.WantCode(t, "plan "+l.String(), err, tenancy.CodeInvalid)
	}
}
