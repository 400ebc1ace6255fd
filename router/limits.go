package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// LimitsSource returns a tenant's limits; the catalog's Cache implements it.
type LimitsSource interface {
	Limits(ctx context.Context, t *tenancy.Tenant) (tenancy.Limits, error)
}

// Defaults of the limits' Config fields.
const (
	defaultTxWait  = time.Second
	defaultTxQueue = 64
)

// admit applies t's limits to a transaction about to start: it refuses it
// while the tenant is in debt of database time (see dbBudget), waits for one
// of the tenant's slots, if its plan caps concurrent transactions, and returns
// the statement timeout to set and the function to call when the transaction
// ends, which charges its time and gives the slot back.
// Over the cap, after waiting Config.TxWait (or until ctx's deadline, if
// sooner) or when Config.TxQueue transactions of the tenant already wait, it
// fails with CodeRateLimited. Unknown limits fail the transaction: a tenant is
// never served without them.
func (r *Router) admit(ctx context.Context, t *tenancy.Tenant) (timeout time.Duration, release func(), err error) {
	if r.cfg.Limits == nil {
		return 0, func() {}, nil
	}
	l, err := r.cfg.Limits.Limits(ctx, t)
	if err != nil {
		return 0, nil, fmt.Errorf("limits of tenant %q: %w", t.Slug, err)
	}
	if err := l.Validate(); err != nil { // the source's fault, not the caller's: not CodeInvalid
		return 0, nil, tenancy.Errorf(tenancy.CodeInternal, "limits of tenant %q: %w", t.Slug, err)
	}
	if l.DBTime > 0 {
		if ok, wait := r.dbTime.allow(t.ID, l.DBTime); !ok {
			return 0, nil, tenancy.Errorf(tenancy.CodeRateLimited, "tenant %q has used more than its database time (%g s per second); retry in %v",
				t.Slug, l.DBTime, wait.Round(time.Millisecond)+time.Millisecond)
		}
	}
	if l.MaxConcurrentTx > 0 {
		if err := r.takeSlot(ctx, t, l.MaxConcurrentTx); err != nil {
			return 0, nil, err
		}
	}
	start := time.Now() // the transaction's time, charged to its budget, counts from here
	return l.StatementTimeout, func() {
		if l.DBTime > 0 {
			r.dbTime.charge(t.ID, l.DBTime, time.Since(start))
		}
		if l.MaxConcurrentTx > 0 {
			r.slots.release(t.ID)
		}
	}, nil
}

// takeSlot waits for one of the tenant's limit slots: at most Config.TxWait
// (or until ctx's deadline), behind at most Config.TxQueue others, or fails
// with CodeRateLimited.
func (r *Router) takeSlot(ctx context.Context, t *tenancy.Tenant, limit int) error {
	wait := r.cfg.TxWait
	if wait <= 0 {
		wait = defaultTxWait
	}
	queue := r.cfg.TxQueue
	if queue <= 0 {
		queue = defaultTxQueue
	}
	err := r.slots.acquire(ctx, t.ID, limit, wait, queue)
	switch {
	case errors.Is(err, errQueueFull):
		return tenancy.Errorf(tenancy.CodeRateLimited, "tenant %q has %d transactions running, its limit, and %d waiting; retry later", t.Slug, limit, queue)
	case errors.Is(err, errWaited), errors.Is(err, context.DeadlineExceeded):
		return tenancy.Errorf(tenancy.CodeRateLimited, "tenant %q has %d transactions running, its limit; none ended in time, retry later", t.Slug, limit)
	}
	return err
}

// timeoutSetting is the value of statement_timeout for the prelude: "" keeps
// the server's default (see preludeSetTimeoutSQL).
func timeoutSetting(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

var (
	errQueueFull = errors.New("too many waiting")
	errWaited    = errors.New("waited too long")
)

// txSlots caps each tenant's concurrent transactions. Waiters are served in
// their order of arrival, so a tenant's transactions cannot starve each other.
type txSlots struct {
	mu      sync.Mutex
	tenants map[uuid.UUID]*tenantSlots
}

type tenantSlots struct {
	inUse   int
	limit   int             // the cap, as of the last arrival
	waiters []chan struct{} // closed when granted a slot; oldest first
}

// grant hands free slots to the oldest waiters.
func (s *tenantSlots) grant() {
	for len(s.waiters) > 0 && s.inUse < s.limit {
		close(s.waiters[0])
		s.waiters = s.waiters[1:]
		s.inUse++
	}
}

// acquire takes one of the tenant's limit slots, waiting at most wait, behind
// at most queue others.
func (ts *txSlots) acquire(ctx context.Context, id uuid.UUID, limit int, wait time.Duration, queue int) error {
	ts.mu.Lock()
	if ts.tenants == nil {
		ts.tenants = map[uuid.UUID]*tenantSlots{}
	}
	s := ts.tenants[id]
	if s == nil {
		s = &tenantSlots{}
		ts.tenants[id] = s
	}
	s.limit = limit
	s.grant() // the cap may have been raised
	if s.inUse < s.limit && len(s.waiters) == 0 {
		s.inUse++
		ts.mu.Unlock()
		return nil
	}
	if len(s.waiters) >= queue {
		ts.mu.Unlock()
		return errQueueFull
	}
	granted := make(chan struct{})
	s.waiters = append(s.waiters, granted)
	ts.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	select {
	case <-granted:
		return nil
	case <-timer.C:
		err = errWaited
	case <-ctx.Done():
		err = ctx.Err()
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	select {
	case <-granted: // granted while giving up: pass the slot on
		s.inUse--
		s.grant()
	default:
		s.waiters = slices.DeleteFunc(s.waiters, func(c chan struct{}) bool { return c == granted })
	}
	ts.forgetIdle(id, s)
	return err
}

// release gives back one of the tenant's slots.
func (ts *txSlots) release(id uuid.UUID) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	s := ts.tenants[id]
	s.inUse--
	s.grant()
	ts.forgetIdle(id, s)
}

// forgetIdle drops a tenant without transactions, so that the map holds only
// busy tenants.
func (ts *txSlots) forgetIdle(id uuid.UUID, s *tenantSlots) {
	if s.inUse == 0 && len(s.waiters) == 0 {
		delete(ts.tenants, id)
	}
}

// running returns how many of the tenant's transactions hold a slot, and how
// many wait.
func (ts *txSlots) running(id uuid.UUID) (inUse, waiting int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if s := ts.tenants[id]; s != nil {
		return s.inUse, len(s.waiters)
	}
	return 0, 0
}

// TenantTx reports how many of a tenant's transactions run on this router
// (holding one of its slots) and how many wait for one. Both are 0 when the
// router has no Limits.
func (r *Router) TenantTx(id uuid.UUID) (running, waiting int) { return r.slots.running(id) }
