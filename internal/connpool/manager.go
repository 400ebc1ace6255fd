package connpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Manager. Budget, Dial and Close are required.
type Config[C any] struct {
	// Budget is the most connections open at once across all keys, counting
	// those being dialed and those being closed. It must be positive.
	Budget int

	// MaxPerKey caps the connections open at once for one key, so that one
	// busy database cannot take the whole budget. 0 means Budget; a value
	// above Budget is lowered to Budget.
	MaxPerKey int

	// Dial opens a connection for key. It is called without the manager's
	// lock held, with the context of the Acquire that needs the connection,
	// after a slot of the budget has been reserved for it. An error is
	// returned to that caller (wrapped) and frees the slot.
	Dial func(ctx context.Context, key string) (C, error)

	// Close closes a connection. It is called without the manager's lock held.
	// The connection's slot is given back only once Close has returned.
	Close func(C)

	// Reusable reports whether a released connection may be kept idle for
	// the next caller (for example: not closed, no transaction open). It is
	// called on Release, without the manager's lock held. nil means always.
	Reusable func(C) bool

	// ReuseWait is how long a caller whose key already has connections in
	// use waits for one of them to be released, when the budget is full,
	// before it evicts the idle connection of another key and dials. A
	// transaction usually ends sooner than a new connection is dialed and
	// warmed up, and without this wait many keys sharing a full budget
	// evict each other's idle connections on almost every Acquire (each
	// eviction then costs the victim's key a dial of its own). A caller of a
	// key with no connection in use never waits for this. 0 means no wait:
	// evict at once.
	ReuseWait time.Duration

	// IdleTimeout closes connections that stayed idle longer than this. 0
	// means never; idle connections then close only when evicted to make room
	// for another key, by CloseKey, or by Close. A positive IdleTimeout
	// starts a goroutine that Close stops.
	IdleTimeout time.Duration
}

// Stats is a snapshot of a Manager's counters.
//
// Open == InUse + Idle + Closing, and Open <= Budget.
type Stats struct {
	// Open is the number of slots of the budget taken: connections leased,
	// being dialed, idle, or being closed.
	Open int
	// InUse is the number of connections held by a lease or being dialed
	// for a caller.
	InUse int
	// Idle is the number of connections kept open for reuse.
	Idle int
	// Closing is the number of connections being closed; they hold their
	// slot until Close has returned.
	Closing int
	// Waiting is the number of callers of Acquire waiting for a slot.
	Waiting int
	// Keys is the number of keys with a connection open or a caller waiting.
	Keys int
	// Dials is the number of calls to Config.Dial, failed ones included.
	Dials int64
	// Evictions is the number of idle connections closed to make room for
	// another key.
	Evictions int64
}

// Manager hands out connections for many keys under one connection budget.
// See the package documentation for its policy. Its methods are safe for
// concurrent use.
type Manager[C any] struct {
	dialFn      func(ctx context.Context, key string) (C, error)
	closeFn     func(C)
	reusable    func(C) bool
	budget      int
	perKey      int
	reuseWait   time.Duration
	idleTimeout time.Duration

	dials atomic.Int64

	mu        sync.Mutex
	closed    bool
	keys      map[string]*keyPool[C]
	open      int // slots taken: inUse + idle + closing
	inUse     int // leased or being dialed
	idle      int
	closing   int
	evictions int64
	// Idle connections of every key, least recently released first.
	lruHead, lruTail *conn[C]
	// Callers waiting for a slot, first come first.
	waitHead, waitTail *waiter[C]
	waiting            int

	// The idle reaper, when IdleTimeout > 0.
	kick       chan struct{} // an idle connection appeared in an empty list
	stop       chan struct{}
	reaperDone chan struct{}
}

// keyPool is the state of one key. It lives in Manager.keys while the key has
// a slot or a waiter.
type keyPool[C any] struct {
	key     string
	open    int // slots taken by this key: inUse + idle + closing
	inUse   int
	idle    int
	waiting int
	// epoch is raised by CloseKey; a connection whose slot was reserved in
	// an earlier epoch is closed on release.
	epoch uint64
	// Idle connections of this key; Acquire takes the most recent (tail).
	idleHead, idleTail *conn[C]
}

// conn is one connection and its place in the idle lists.
type conn[C any] struct {
	m     *Manager[C]
	kp    *keyPool[C]
	v     C
	epoch uint64
	// gen is raised on every release, so that a stale Lease cannot release
	// the connection again after somebody else acquired it.
	gen       atomic.Uint64
	idleSince time.Time
	// Links in the manager's LRU list and in the key's idle list, set only
	// while the connection is idle.
	prev, next   *conn[C]
	kprev, knext *conn[C]
}

// grant is what a caller of Acquire is given: an idle connection, or a
// reserved slot to dial in (after closing the evicted victim, if any).
type grant[C any] struct {
	c      *conn[C]
	dial   bool
	epoch  uint64
	victim *conn[C]
}

// waiter is a caller of Acquire waiting for a slot.
type waiter[C any] struct {
	kp         *keyPool[C]
	prev, next *waiter[C]
	ready      chan struct{} // receives once served
	// mayEvict is false while the waiter waits for its key's own
	// connections (Config.ReuseWait).
	mayEvict bool
	served   bool
	g        grant[C]
	err      error
}

// New returns a Manager for cfg.
func New[C any](cfg Config[C]) (*Manager[C], error) {
	switch {
	case cfg.Budget <= 0:
		return nil, fmt.Errorf("connection budget must be positive, got %d", cfg.Budget)
	case cfg.MaxPerKey < 0:
		return nil, fmt.Errorf("connection limit per key must not be negative, got %d", cfg.MaxPerKey)
	case cfg.ReuseWait < 0:
		return nil, fmt.Errorf("reuse wait must not be negative, got %v", cfg.ReuseWait)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("idle timeout must not be negative, got %v", cfg.IdleTimeout)
	case cfg.Dial == nil:
		return nil, errors.New("dial func is required")
	case cfg.Close == nil:
		return nil, errors.New("close func is required")
	}
	perKey := cfg.MaxPerKey
	if perKey == 0 || perKey > cfg.Budget {
		perKey = cfg.Budget
	}
	m := &Manager[C]{
		dialFn:      cfg.Dial,
		closeFn:     cfg.Close,
		reusable:    cfg.Reusable,
		budget:      cfg.Budget,
		perKey:      perKey,
		reuseWait:   cfg.ReuseWait,
		idleTimeout: cfg.IdleTimeout,
		keys:        make(map[string]*keyPool[C]),
	}
	if m.idleTimeout > 0 {
		m.kick = make(chan struct{}, 1)
		m.stop = make(chan struct{})
		m.reaperDone = make(chan struct{})
		go m.reap()
	}
	return m, nil
}

// Acquire returns a connection for key, leased to the caller until Release or
// Destroy. It reuses an idle connection of key if there is one; else it
// dials a new one if the budget and MaxPerKey allow; else it closes the least
// recently used idle connection of another key and dials in its place; else
// it waits, first come first served, until a connection is released or
// closed. If ctx ends while waiting, Acquire returns a *BudgetError that
// wraps ctx.Err(). A Dial error is returned wrapped. After Close, Acquire
// returns ErrClosed.
func (m *Manager[C]) Acquire(ctx context.Context, key string) (Lease[C], error) {
	if err := ctx.Err(); err != nil {
		return Lease[C]{}, fmt.Errorf("acquire connection for %q: %w", key, err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Lease[C]{}, ErrClosed
	}
	kp := m.keys[key]
	if kp == nil {
		kp = &keyPool[C]{key: key}
		m.keys[key] = kp
	}
	mayEvict := m.reuseWait == 0 || kp.inUse == 0
	if g, ok := m.grantLocked(kp, mayEvict); ok {
		m.mu.Unlock()
		if g.c != nil {
			return Lease[C]{c: g.c, gen: g.c.gen.Load()}, nil
		}
		return m.dial(ctx, kp, g)
	}

	w := &waiter[C]{kp: kp, ready: make(chan struct{}, 1), mayEvict: mayEvict}
	m.pushWaiterLocked(w)
	m.mu.Unlock()

	var reuseTimeout <-chan time.Time
	if !mayEvict {
		t := time.NewTimer(m.reuseWait)
		defer t.Stop()
		reuseTimeout = t.C
	}
	for done := false; !done; {
		select {
		case <-w.ready:
			done = true
		case <-reuseTimeout:
			// None of the key's connections came back in time: evict now if
			// that is what holds the caller back, else keep waiting.
			reuseTimeout = nil
			m.mu.Lock()
			if !w.served {
				w.mayEvict = true
				if g, ok := m.grantLocked(kp, true); ok {
					m.removeWaiterLocked(w)
					w.served, w.g = true, g
					w.ready <- struct{}{}
				}
			}
			m.mu.Unlock()
		case <-ctx.Done():
			m.mu.Lock()
			if !w.served {
				m.removeWaiterLocked(w)
				err := &BudgetError{Key: key, Limit: m.budget, Err: ctx.Err()}
				if kp.open >= m.perKey && m.perKey < m.budget {
					err.Limit, err.PerKey = m.perKey, true
				}
				m.dropKeyIfUnusedLocked(kp)
				m.mu.Unlock()
				return Lease[C]{}, err
			}
			m.mu.Unlock()
			if w.err != nil {
				return Lease[C]{}, w.err
			}
			// Served while giving up: hand the grant on to the next caller.
			m.abandon(kp, w.g)
			return Lease[C]{}, &BudgetError{Key: key, Limit: m.budget, Err: ctx.Err()}
		}
	}
	if w.err != nil {
		return Lease[C]{}, w.err
	}
	if w.g.c != nil {
		return Lease[C]{c: w.g.c, gen: w.g.c.gen.Load()}, nil
	}
	return m.dial(ctx, kp, w.g)
}

// grantLocked serves kp now if the policy allows: an idle connection of kp,
// else a free slot, else, if mayEvict, the slot of the least recently used
// idle connection (of another key, since kp has none).
func (m *Manager[C]) grantLocked(kp *keyPool[C], mayEvict bool) (grant[C], bool) {
	if c := kp.idleTail; c != nil {
		m.unlinkIdleLocked(c)
		kp.inUse++
		m.inUse++
		return grant[C]{c: c}, true
	}
	if kp.open >= m.perKey {
		return grant[C]{}, false
	}
	if m.open < m.budget {
		m.open++
		kp.open++
		kp.inUse++
		m.inUse++
		return grant[C]{dial: true, epoch: kp.epoch}, true
	}
	v := m.lruHead
	if v == nil || !mayEvict {
		return grant[C]{}, false
	}
	// The victim's slot passes to kp: m.open does not change. The victim
	// still counts for its own key until closed (see closeVictim).
	m.unlinkIdleLocked(v)
	kp.open++
	kp.inUse++
	m.inUse++
	m.evictions++
	return grant[C]{dial: true, epoch: kp.epoch, victim: v}, true
}

// dial closes g's victim, if any, then dials in the slot reserved by g. The
// slot is freed if Dial fails or panics.
func (m *Manager[C]) dial(ctx context.Context, kp *keyPool[C], g grant[C]) (_ Lease[C], err error) {
	if g.victim != nil {
		// Close before dialing, so the server never sees Budget+1.
		m.closeVictim(g.victim)
	}
	ok := false
	defer func() {
		if !ok {
			m.unreserve(kp)
		}
	}()
	m.dials.Add(1)
	v, err := m.dialFn(ctx, kp.key)
	if err != nil {
		return Lease[C]{}, fmt.Errorf("dial %q: %w", kp.key, err)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		m.closeFn(v)
		return Lease[C]{}, ErrClosed
	}
	ok = true
	return Lease[C]{c: &conn[C]{m: m, kp: kp, v: v, epoch: g.epoch}}, nil
}

// abandon gives back a grant that its waiter no longer wants.
func (m *Manager[C]) abandon(kp *keyPool[C], g grant[C]) {
	if g.c != nil {
		m.put(g.c, g.c.gen.Load(), false)
		return
	}
	if g.victim != nil {
		m.closeVictim(g.victim)
	}
	m.unreserve(kp)
}

// closeVictim closes an evicted connection, whose slot has passed to another
// key already, and then takes it off its own key's count.
func (m *Manager[C]) closeVictim(v *conn[C]) {
	m.closeFn(v.v)
	m.mu.Lock()
	v.kp.open--
	m.dropKeyIfUnusedLocked(v.kp)
	m.serveLocked()
	m.mu.Unlock()
}

// unreserve frees a slot reserved for a dial that did not happen or failed.
func (m *Manager[C]) unreserve(kp *keyPool[C]) {
	m.mu.Lock()
	m.open--
	m.inUse--
	kp.open--
	kp.inUse--
	m.dropKeyIfUnusedLocked(kp)
	m.serveLocked()
	m.mu.Unlock()
}

// put takes back the connection of a lease of generation gen: idle if it may
// be reused, else closed.
func (m *Manager[C]) put(c *conn[C], gen uint64, destroy bool) {
	if c.gen.Load() != gen {
		return // released already
	}
	reuse := !destroy && (m.reusable == nil || m.reusable(c.v))
	m.mu.Lock()
	if !c.gen.CompareAndSwap(gen, gen+1) {
		m.mu.Unlock()
		return // released concurrently
	}
	kp := c.kp
	kp.inUse--
	m.inUse--
	if reuse && !m.closed && c.epoch == kp.epoch {
		m.pushIdleLocked(c)
		if m.waitHead != nil {
			m.serveLocked()
		}
		m.mu.Unlock()
		return
	}
	m.closing++
	m.mu.Unlock()
	m.closeFn(c.v)
	m.mu.Lock()
	m.finishCloseLocked(c)
	m.serveLocked()
	m.mu.Unlock()
}

// closeIdle closes connections taken out of the idle lists (and counted in
// m.closing) and frees their slots.
func (m *Manager[C]) closeIdle(cs []*conn[C]) {
	if len(cs) == 0 {
		return
	}
	for _, c := range cs {
		m.closeFn(c.v)
	}
	m.mu.Lock()
	for _, c := range cs {
		m.finishCloseLocked(c)
	}
	m.serveLocked()
	m.mu.Unlock()
}

// finishCloseLocked frees the slot of c, which was counted in m.closing.
func (m *Manager[C]) finishCloseLocked(c *conn[C]) {
	m.closing--
	m.open--
	c.kp.open--
	m.dropKeyIfUnusedLocked(c.kp)
}

// serveLocked serves waiters first come first served, skipping those whose
// key is at MaxPerKey, until none can be served.
func (m *Manager[C]) serveLocked() {
	for w := m.waitHead; w != nil; {
		if m.closed || (m.open >= m.budget && m.idle == 0) {
			return
		}
		next := w.next
		if g, ok := m.grantLocked(w.kp, w.mayEvict); ok {
			m.removeWaiterLocked(w)
			w.served, w.g = true, g
			w.ready <- struct{}{}
		}
		w = next
	}
}

// KeyStats returns the number of connections open for key (leased, being
// dialed, idle or being closed) and how many of them are in use.
func (m *Manager[C]) KeyStats(key string) (open, inUse int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if kp := m.keys[key]; kp != nil {
		return kp.open, kp.inUse
	}
	return 0, 0
}

// Stats returns a snapshot of the Manager's counters.
func (m *Manager[C]) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{
		Open:      m.open,
		InUse:     m.inUse,
		Idle:      m.idle,
		Closing:   m.closing,
		Waiting:   m.waiting,
		Keys:      len(m.keys),
		Dials:     m.dials.Load(),
		Evictions: m.evictions,
	}
}

// CloseKey closes the idle connections of key now, and its busy ones (leased
// or being dialed) when they are released. Use it when the database behind
// key is dropped or moved. Callers waiting for key keep waiting and get new
// connections.
func (m *Manager[C]) CloseKey(key string) {
	m.mu.Lock()
	kp := m.keys[key]
	if kp == nil {
		m.mu.Unlock()
		return
	}
	kp.epoch++
	var cs []*conn[C]
	for c := kp.idleHead; c != nil; c = kp.idleHead {
		m.unlinkIdleLocked(c)
		m.closing++
		cs = append(cs, c)
	}
	m.mu.Unlock()
	m.closeIdle(cs)
}

// Close closes the idle connections, fails the waiting callers with
// ErrClosed, and makes later calls to Acquire fail with ErrClosed. It does not
// wait for leased connections: they are closed when released. Close is
// idempotent.
func (m *Manager[C]) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	var cs []*conn[C]
	for c := m.lruHead; c != nil; c = m.lruHead {
		m.unlinkIdleLocked(c)
		m.closing++
		cs = append(cs, c)
	}
	for w := m.waitHead; w != nil; w = m.waitHead {
		m.removeWaiterLocked(w)
		m.dropKeyIfUnusedLocked(w.kp)
		w.served, w.err = true, ErrClosed
		w.ready <- struct{}{}
	}
	m.mu.Unlock()
	if m.stop != nil {
		close(m.stop)
		<-m.reaperDone
	}
	m.closeIdle(cs)
}

// pushIdleLocked makes c the most recently used idle connection.
func (m *Manager[C]) pushIdleLocked(c *conn[C]) {
	kp := c.kp
	if m.idleTimeout > 0 {
		c.idleSince = time.Now()
		if m.lruHead == nil {
			select {
			case m.kick <- struct{}{}:
			default:
			}
		}
	}
	c.prev, c.next = m.lruTail, nil
	if m.lruTail != nil {
		m.lruTail.next = c
	} else {
		m.lruHead = c
	}
	m.lruTail = c
	c.kprev, c.knext = kp.idleTail, nil
	if kp.idleTail != nil {
		kp.idleTail.knext = c
	} else {
		kp.idleHead = c
	}
	kp.idleTail = c
	kp.idle++
	m.idle++
}

// unlinkIdleLocked takes c out of the idle lists.
func (m *Manager[C]) unlinkIdleLocked(c *conn[C]) {
	kp := c.kp
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		m.lruHead = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		m.lruTail = c.prev
	}
	if c.kprev != nil {
		c.kprev.knext = c.knext
	} else {
		kp.idleHead = c.knext
	}
	if c.knext != nil {
		c.knext.kprev = c.kprev
	} else {
		kp.idleTail = c.kprev
	}
	c.prev, c.next, c.kprev, c.knext = nil, nil, nil, nil
	kp.idle--
	m.idle--
}

func (m *Manager[C]) pushWaiterLocked(w *waiter[C]) {
	w.prev = m.waitTail
	if m.waitTail != nil {
		m.waitTail.next = w
	} else {
		m.waitHead = w
	}
	m.waitTail = w
	w.kp.waiting++
	m.waiting++
}

func (m *Manager[C]) removeWaiterLocked(w *waiter[C]) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		m.waitHead = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		m.waitTail = w.prev
	}
	w.prev, w.next = nil, nil
	w.kp.waiting--
	m.waiting--
}

// dropKeyIfUnusedLocked forgets kp once it has no slot and no waiter, so that
// keys seen once do not accumulate.
func (m *Manager[C]) dropKeyIfUnusedLocked(kp *keyPool[C]) {
	if kp.open == 0 && kp.waiting == 0 && m.keys[kp.key] == kp {
		delete(m.keys, kp.key)
	}
}
