package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
)

// FallbackTier is the plan of a tenant whose tier has no plan in the catalog:
// the most restrictive of the seeded plans, so that a mistyped tier never
// lifts a tenant's limits.
const FallbackTier tenancy.Tier = "free"

// Plan is the limits of one tier.
type Plan struct {
	Tier      tenancy.Tier   `json:"tier"`
	Limits    tenancy.Limits `json:"limits"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Overrides are a tenant's own limits, replacing its plan's field by field; a
// nil field keeps the plan's value.
type Overrides struct {
	RPS              *float64       `json:"rps,omitempty"`
	Burst            *int           `json:"burst,omitempty"`
	MaxConcurrentTx  *int           `json:"max_concurrent_tx,omitempty"`
	StatementTimeout *time.Duration `json:"statement_timeout,omitempty"`
	DBTime           *float64       `json:"db_time,omitempty"`
}

// Merge returns o with the fields that p sets replaced by p's.
func (o Overrides) Merge(p Overrides) Overrides {
	if p.RPS != nil {
		o.RPS = p.RPS
	}
	if p.Burst != nil {
		o.Burst = p.Burst
	}
	if p.MaxConcurrentTx != nil {
		o.MaxConcurrentTx = p.MaxConcurrentTx
	}
	if p.StatementTimeout != nil {
		o.StatementTimeout = p.StatementTimeout
	}
	if p.DBTime != nil {
		o.DBTime = p.DBTime
	}
	return o
}

// Apply returns l with the overrides applied.
func (o Overrides) Apply(l tenancy.Limits) tenancy.Limits {
	if o.RPS != nil {
		l.RPS = *o.RPS
	}
	if o.Burst != nil {
		l.Burst = *o.Burst
	}
	if o.MaxConcurrentTx != nil {
		l.MaxConcurrentTx = *o.MaxConcurrentTx
	}
	if o.StatementTimeout != nil {
		l.StatementTimeout = *o.StatementTimeout
	}
	if o.DBTime != nil {
		l.DBTime = *o.DBTime
	}
	return l
}

const planColumns = `tier, rps, burst, max_concurrent_tx, statement_timeout_ms, db_time, updated_at`

func scanPlan(row pgx.Row) (*Plan, error) {
	var p Plan
	var ms int64
	err := row.Scan(&p.Tier, &p.Limits.RPS, &p.Limits.Burst, &p.Limits.MaxConcurrentTx, &ms, &p.Limits.DBTime, &p.UpdatedAt)
	p.Limits.StatementTimeout = time.Duration(ms) * time.Millisecond
	return &p, err
}

// Plans returns every plan, by tier.
func (c *Catalog) Plans(ctx context.Context) ([]*Plan, error) {
	rows, err := c.pool.Query(ctx, `SELECT `+planColumns+` FROM catalog.plans ORDER BY tier`)
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Plan, error) { return scanPlan(r) })
}

// Plan returns the plan of a tier, with code CodeNotFound when it has none.
func (c *Catalog) Plan(ctx context.Context, tier tenancy.Tier) (*Plan, error) {
	if err := tenancy.ValidateName("tier", string(tier)); err != nil {
		return nil, err
	}
	p, err := scanPlan(c.pool.QueryRow(ctx, `SELECT `+planColumns+` FROM catalog.plans WHERE tier = $1`, string(tier)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "plan %q not found", tier)
	}
	if err != nil {
		return nil, fmt.Errorf("read plan %q: %w", tier, err)
	}
	return p, nil
}

// SetPlan creates or replaces the plan of p.Tier. Every app node applies it
// within moments (see Cache.Limits), without a restart. Invalid limits (see
// tenancy.Limits.Validate) or tier name are refused with CodeInvalid and
// change nothing.
func (c *Catalog) SetPlan(ctx context.Context, p *Plan) error {
	if err := tenancy.ValidateName("tier", string(p.Tier)); err != nil {
		return err
	}
	if err := p.Limits.Validate(); err != nil {
		return err
	}
	err := c.pool.QueryRow(ctx, `
		INSERT INTO catalog.plans (tier, rps, burst, max_concurrent_tx, statement_timeout_ms, db_time)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (tier) DO UPDATE SET rps = EXCLUDED.rps, burst = EXCLUDED.burst,
			max_concurrent_tx = EXCLUDED.max_concurrent_tx, statement_timeout_ms = EXCLUDED.statement_timeout_ms,
			db_time = EXCLUDED.db_time, updated_at = now()
		RETURNING updated_at`,
		string(p.Tier), p.Limits.RPS, p.Limits.Burst, p.Limits.MaxConcurrentTx, p.Limits.StatementTimeout.Milliseconds(), p.Limits.DBTime,
	).Scan(&p.UpdatedAt)
	if err != nil {
		return fmt.Errorf("set plan %q: %w", p.Tier, err)
	}
	return nil
}

// Overrides returns the tenant's overrides; all nil when it has none.
func (c *Catalog) Overrides(ctx context.Context, id uuid.UUID) (Overrides, error) {
	var o Overrides
	var ms *int64
	err := c.pool.QueryRow(ctx, `SELECT rps, burst, max_concurrent_tx, statement_timeout_ms, db_time
		FROM catalog.plan_overrides WHERE tenant_id = $1`, id).Scan(&o.RPS, &o.Burst, &o.MaxConcurrentTx, &ms, &o.DBTime)
	if errors.Is(err, pgx.ErrNoRows) {
		return Overrides{}, nil
	}
	if err != nil {
		return o, fmt.Errorf("read overrides of tenant %s: %w", id, err)
	}
	if ms != nil {
		d := time.Duration(*ms) * time.Millisecond
		o.StatementTimeout = &d
	}
	return o, nil
}

// SetOverrides replaces the tenant's overrides (all nil removes them). It
// refuses, with CodeInvalid and nothing changed, overrides that make the
// tenant's limits invalid on its current plan, and answers CodeNotFound for
// an unknown tenant.
func (c *Catalog) SetOverrides(ctx context.Context, id uuid.UUID, o Overrides) error {
	return pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var tier string
		err := tx.QueryRow(ctx, `SELECT tier FROM catalog.tenants WHERE id = $1 FOR SHARE`, id).Scan(&tier)
		if errors.Is(err, pgx.ErrNoRows) {
			return tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", id.String())
		}
		if err != nil {
			return fmt.Errorf("set overrides of tenant %s: %w", id, err)
		}
		plan, err := planOf(ctx, tx, tier)
		if err != nil {
			return err
		}
		if err := o.Apply(plan.Limits).Validate(); err != nil {
			return err
		}
		if o == (Overrides{}) {
			_, err = tx.Exec(ctx, `DELETE FROM catalog.plan_overrides WHERE tenant_id = $1`, id)
		} else {
			var ms *int64
			if o.StatementTimeout != nil {
				v := o.StatementTimeout.Milliseconds()
				ms = &v
			}
			_, err = tx.Exec(ctx, `
				INSERT INTO catalog.plan_overrides (tenant_id, rps, burst, max_concurrent_tx, statement_timeout_ms, db_time)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (tenant_id) DO UPDATE SET rps = EXCLUDED.rps, burst = EXCLUDED.burst,
					max_concurrent_tx = EXCLUDED.max_concurrent_tx,
					statement_timeout_ms = EXCLUDED.statement_timeout_ms, db_time = EXCLUDED.db_time, updated_at = now()`,
				id, o.RPS, o.Burst, o.MaxConcurrentTx, ms, o.DBTime)
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23514" { // a CHECK the validation above missed
			return tenancy.Errorf(tenancy.CodeInvalid, "overrides of tenant %s: %s", id, pgErr.Message)
		}
		if err != nil {
			return fmt.Errorf("set overrides of tenant %s: %w", id, err)
		}
		return nil
	})
}

// planOf returns the plan of tier, or FallbackTier's when tier has none.
func planOf(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, tier string) (*Plan, error) {
	p, err := scanPlan(q.QueryRow(ctx, `SELECT `+planColumns+` FROM catalog.plans
		WHERE tier IN ($1, $2) ORDER BY tier = $1 DESC LIMIT 1`, tier, string(FallbackTier)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("no plan for tier %q, nor the fallback plan %q", tier, FallbackTier)
	}
	if err != nil {
		return nil, fmt.Errorf("read plan %q: %w", tier, err)
	}
	return p, nil
}

// Limits returns the tenant's limits: the plan of its tier (FallbackTier's
// when that tier has no plan) with its overrides applied. It reads the
// catalog every time; app nodes use Cache.Limits.
func (c *Catalog) Limits(ctx context.Context, t *tenancy.Tenant) (tenancy.Limits, error) {
	plan, err := planOf(ctx, c.pool, string(t.Tier))
	if err != nil {
		return tenancy.Limits{}, err
	}
	o, err := c.Overrides(ctx, t.ID)
	if err != nil {
		return tenancy.Limits{}, err
	}
	l := o.Apply(plan.Limits)
	if err := l.Validate(); err != nil {
		// Only if the tables were changed by hand, or a plan changed under an
		// override of part of it: the platform's fault, not the caller's, so
		// not Validate's CodeInvalid.
		return tenancy.Limits{}, tenancy.Errorf(tenancy.CodeInternal, "limits of tenant %q are invalid in the catalog: %w", t.Slug, err)
	}
	return l, nil
}

// limitsCache is the part of Cache that holds tenants' limits.
type limitsCache struct {
	mu  sync.RWMutex
	m   map[uuid.UUID]limitsEntry
	gen uint64 // counts invalidations, under mu
}

type limitsEntry struct {
	tier    tenancy.Tier // the tier the limits were read for
	limits  tenancy.Limits
	expires time.Time
}

func (lc *limitsCache) invalidate(id uuid.UUID) {
	lc.mu.Lock()
	lc.gen++
	delete(lc.m, id)
	lc.mu.Unlock()
}

// expire marks every entry stale: the next lookup asks the catalog, and gets
// the stale entry only if the catalog cannot answer (see Cache.expire).
func (lc *limitsCache) expire() {
	lc.mu.Lock()
	lc.gen++
	for id, e := range lc.m {
		e.expires = time.Time{}
		lc.m[id] = e
	}
	lc.mu.Unlock()
}

func (lc *limitsCache) flush() {
	lc.mu.Lock()
	lc.gen++
	clear(lc.m)
	lc.mu.Unlock()
}

// Limits returns the tenant's limits (see Catalog.Limits) from memory when
// possible. A change of a plan, of the tenant's overrides or of its tier
// reaches every cache through the catalog's notifications, with the cache's
// TTL as the fallback. While the catalog cannot be reached, limits last read
// for the tenant's tier are served as they were (as tenants are, see
// Cache.ResolveID); without them the error has code CodeUnavailable.
func (c *Cache) Limits(ctx context.Context, t *tenancy.Tenant) (tenancy.Limits, error) {
	lc := &c.limits
	now := time.Now()
	lc.mu.RLock()
	e, ok := lc.m[t.ID]
	gen := lc.gen
	lc.mu.RUnlock()
	if ok && e.tier == t.Tier && now.Before(e.expires) {
		return e.limits, nil
	}
	l, err := c.cat.Limits(ctx, t)
	if err != nil {
		if ok && e.tier == t.Tier {
			c.stale.Add(1)
			return e.limits, nil
		}
		var te *tenancy.Error
		if !errors.As(err, &te) { // no answer; an answer with a code stands
			err = tenancy.Errorf(tenancy.CodeUnavailable, "the catalog cannot be reached to read the limits of tenant %q; retry later: %w", t.Slug, err)
		}
		return l, err
	}
	lc.mu.Lock()
	if lc.gen == gen { // no invalidation raced the load
		if lc.m == nil {
			lc.m = map[uuid.UUID]limitsEntry{}
		}
		lc.m[t.ID] = limitsEntry{tier: t.Tier, limits: l, expires: now.Add(c.cfg.TTL)}
	}
	lc.mu.Unlock()
	return l, nil
}
