package connpool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"

	"pgregory.net/rapid"
)

// TestPolicy checks the Manager against a model of its policy, with random
// budgets, limits per key, and sequences of Acquire (that may wait), Release,
// Destroy, stale releases, cancellations and CloseKey over a few keys.
//
// It runs in a synctest bubble, so after every step synctest.Wait tells
// exactly which callers were served and which are still waiting. The model
// predicts both, and which connection each caller gets, and after every step
// the fake server's counts are checked: never more than Budget connections
// open (counted from the start of a dial to the end of a close, so also at
// the worst moment between steps), nor more than MaxPerKey for one key; no
// connection leased twice; no busy connection closed; Stats and KeyStats
// adding up. At the end everything held is released, and every caller still
// waiting must be served (no starvation).
func TestPolicy(t *testing.T) {
	leakCheck(t)
	synctest.Test(t, func(t *testing.T) {
		rapid.Check(bubbleTB{t}, checkPolicy)
	})
}

// bubbleTB hides that it is a *testing.T from rapid, which would otherwise
// ask for the test's deadline: a synctest bubble forbids that. Rapid's time
// budgets then use the bubble's clock, which stands still while the check runs.
type bubbleTB struct{ rapid.TB }

const refusedKey = "refused"

type decision int

const (
	mustWait decision = iota
	takeIdle
	dialNew
	evictAndDial
)

func (d decision) String() string {
	return [...]string{"wait", "take idle", "dial", "evict and dial"}[d]
}

// propWaiter is a caller of Acquire running in its own goroutine.
type propWaiter struct {
	id     int
	key    string
	cancel context.CancelFunc
	res    chan propResult
}

type propResult struct {
	l   Lease[*fakeConn]
	err error
}

// outcome is what the model expects a caller to get.
type outcome struct {
	w   *propWaiter
	d   decision
	c   *fakeConn // the idle connection taken, or the victim evicted
	key string
}

// policyModel is the Manager's state as the model sees it.
type policyModel struct {
	budget, perKey int
	keys           []string
	total          int
	open           map[string]int
	idle           []*fakeConn // least recently released first
	held           []Lease[*fakeConn]
	doomed         map[*fakeConn]bool // CloseKey'd: closed on release
	waiters        []*propWaiter      // first come first
	stale          []Lease[*fakeConn]
	seen           map[*fakeConn]bool
}

// decide is the policy: an idle connection of key (the most recently
// released), else a new one within the limits, else the least recently used
// idle connection's slot, else wait.
func (md *policyModel) decide(key string) (decision, *fakeConn) {
	for i := len(md.idle) - 1; i >= 0; i-- {
		if md.idle[i].key == key {
			return takeIdle, md.idle[i]
		}
	}
	switch {
	case md.open[key] >= md.perKey:
		return mustWait, nil
	case md.total < md.budget:
		return dialNew, nil
	case len(md.idle) > 0:
		return evictAndDial, md.idle[0]
	}
	return mustWait, nil
}

// reserve applies what the Manager does under its lock when serving key.
func (md *policyModel) reserve(key string) (outcome, bool) {
	d, c := md.decide(key)
	switch d {
	case mustWait:
		return outcome{}, false
	case takeIdle:
		md.idle = slices.DeleteFunc(md.idle, func(x *fakeConn) bool { return x == c })
	case dialNew:
		md.total++
		md.open[key]++
	case evictAndDial:
		md.idle = md.idle[1:]
		md.open[c.key]--
		md.open[key]++
	}
	return outcome{d: d, c: c, key: key}, true
}

// serve returns the waiters the Manager must serve now, first come first.
func (md *policyModel) serve() []outcome {
	var out []outcome
	for i := 0; i < len(md.waiters); {
		w := md.waiters[i]
		if o, ok := md.reserve(w.key); ok {
			o.w = w
			out = append(out, o)
			md.waiters = slices.Delete(md.waiters, i, i+1)
			continue
		}
		i++
	}
	return out
}

// closed takes a closed connection's slot off the model.
func (md *policyModel) closed(c *fakeConn) {
	md.total--
	md.open[c.key]--
	delete(md.doomed, c)
}

type policyRun struct {
	t      *rapid.T
	server *fakeServer
	m      *Manager[*fakeConn]
	md     *policyModel
	nextID int
}

func checkPolicy(t *rapid.T) {
	budget := rapid.IntRange(1, 4).Draw(t, "budget")
	maxPerKey := rapid.IntRange(0, budget).Draw(t, "maxPerKey")
	nKeys := rapid.IntRange(1, 5).Draw(t, "keys")

	server := newFakeServer()
	server.refuse[refusedKey] = true
	m, err := New(server.config(budget, maxPerKey))
	if err != nil {
		t.Fatal(err)
	}
	perKey := maxPerKey
	if perKey == 0 {
		perKey = budget
	}
	md := &policyModel{
		budget: budget, perKey: perKey,
		open: map[string]int{}, doomed: map[*fakeConn]bool{}, seen: map[*fakeConn]bool{},
	}
	for i := range nKeys {
		md.keys = append(md.keys, fmt.Sprintf("k%d", i))
	}
	r := &policyRun{t: t, server: server, m: m, md: md}
	defer r.cleanup()

	t.Repeat(map[string]func(*rapid.T){
		"": func(t *rapid.T) { r.check() },
		"Acquire": func(t *rapid.T) {
			r.acquire(rapid.SampledFrom(md.keys).Draw(t, "key"))
		},
		"AcquireRefused": func(t *rapid.T) {
			if d, _ := md.decide(refusedKey); d == mustWait {
				t.Skip("would wait") // keeps failed dials of waiters out of the model
			}
			r.acquire(refusedKey)
		},
		"Release": func(t *rapid.T) {
			if len(md.held) == 0 {
				t.Skip("nothing held")
			}
			i := rapid.IntRange(0, len(md.held)-1).Draw(t, "lease")
			how := rapid.SampledFrom([]string{"release", "broken", "destroy"}).Draw(t, "how")
			r.release(i, how)
		},
		"StaleRelease": func(t *rapid.T) {
			if len(md.stale) == 0 {
				t.Skip("no stale lease")
			}
			l := rapid.SampledFrom(md.stale).Draw(t, "stale")
			if rapid.Bool().Draw(t, "destroy") {
				l.Destroy()
			} else {
				l.Release()
			}
			synctest.Wait()
		},
		"Cancel": func(t *rapid.T) {
			if len(md.waiters) == 0 {
				t.Skip("nobody waiting")
			}
			i := rapid.IntRange(0, len(md.waiters)-1).Draw(t, "waiter")
			w := md.waiters[i]
			md.waiters = slices.Delete(md.waiters, i, i+1)
			w.cancel()
			synctest.Wait()
			select {
			case res := <-w.res:
				if !errors.Is(res.err, context.Canceled) || !errors.Is(res.err, ErrBudgetExhausted) {
					t.Fatalf("canceled waiter %d: got %v, %v", w.id, res.l.Conn(), res.err)
				}
			default:
				t.Fatalf("canceled waiter %d still waiting", w.id)
			}
		},
		"CloseKey": func(t *rapid.T) {
			key := rapid.SampledFrom(md.keys).Draw(t, "key")
			var closing []*fakeConn
			md.idle = slices.DeleteFunc(md.idle, func(c *fakeConn) bool {
				if c.key == key {
					closing = append(closing, c)
					return true
				}
				return false
			})
			for _, c := range closing {
				md.closed(c)
			}
			for _, l := range md.held {
				if l.Conn().key == key {
					md.doomed[l.Conn()] = true
				}
			}
			r.m.CloseKey(key)
			synctest.Wait()
			for _, c := range closing {
				if !c.closed.Load() {
					t.Fatalf("CloseKey(%s) left idle %v open", key, c)
				}
			}
			r.observe(md.serve())
		},
	})

	// No starvation: releasing what is held serves everybody still waiting.
	for len(md.waiters) > 0 {
		if len(md.held) == 0 {
			t.Fatalf("%d callers waiting while no connection is held", len(md.waiters))
		}
		r.release(0, "release")
		r.check()
	}
}

// acquire starts a caller of Acquire and checks that it is served at once or
// waits, as the model predicts.
func (r *policyRun) acquire(key string) {
	r.nextID++
	ctx, cancel := context.WithCancel(context.Background())
	w := &propWaiter{id: r.nextID, key: key, cancel: cancel, res: make(chan propResult, 1)}
	dialsBefore := r.server.stats().dials
	go func() {
		l, err := r.m.Acquire(ctx, key)
		w.res <- propResult{l, err}
	}()
	synctest.Wait()

	o, ok := r.md.reserve(key)
	if !ok {
		r.md.waiters = append(r.md.waiters, w)
		select {
		case res := <-w.res:
			r.t.Fatalf("acquire %s: got %v, %v; want to wait", key, res.l.Conn(), res.err)
		default:
		}
		return
	}
	o.w = w
	if o.d == takeIdle && r.server.stats().dials != dialsBefore {
		r.t.Fatalf("acquire %s dialed although %v was idle", key, o.c)
	}
	if key != refusedKey {
		r.observe([]outcome{o})
		return
	}
	select {
	case res := <-w.res:
		if !errors.Is(res.err, errDialRefused) {
			r.t.Fatalf("acquire %s: got %v, %v; want the dial error", key, res.l.Conn(), res.err)
		}
	default:
		r.t.Fatalf("acquire %s (%v) still waiting", key, o.d)
	}
	cancel()
	if o.d == evictAndDial && !o.c.closed.Load() {
		r.t.Fatalf("acquire %s: victim %v not closed", key, o.c)
	}
	r.md.total--
	r.md.open[key]--
	r.observe(r.md.serve())
}

// release gives back the i-th held lease: "release" (reusable), "broken"
// (released but not reusable) or "destroy".
func (r *policyRun) release(i int, how string) {
	md := r.md
	l := md.held[i]
	md.held = slices.Delete(md.held, i, i+1)
	md.stale = append(md.stale, l)
	c := l.Conn()
	keep := how == "release" && !md.doomed[c]
	switch how {
	case "release":
		l.Release()
	case "broken":
		c.broken.Store(true)
		l.Release()
	case "destroy":
		l.Destroy()
	}
	synctest.Wait()
	if keep {
		md.idle = append(md.idle, c)
	} else {
		if !c.closed.Load() {
			r.t.Fatalf("%s of %v: not closed", how, c)
		}
		md.closed(c)
	}
	r.observe(md.serve())
}

// observe checks that the callers the model serves got what it expects, and
// takes their leases.
func (r *policyRun) observe(outs []outcome) {
	for _, o := range outs {
		var res propResult
		select {
		case res = <-o.w.res:
		default:
			r.t.Fatalf("caller %d for %s: still waiting, want %v", o.w.id, o.key, o.d)
		}
		o.w.cancel()
		if res.err != nil {
			r.t.Fatalf("caller %d for %s: %v", o.w.id, o.key, res.err)
		}
		c := res.l.Conn()
		switch {
		case c.key != o.key:
			r.t.Fatalf("caller %d for %s got %v", o.w.id, o.key, c)
		case o.d == takeIdle && c != o.c:
			r.t.Fatalf("caller %d for %s got %v, want the idle %v", o.w.id, o.key, c, o.c)
		case o.d != takeIdle && r.md.seen[c]:
			r.t.Fatalf("caller %d for %s got %v, want a new connection (%v)", o.w.id, o.key, c, o.d)
		case o.d == evictAndDial && !o.c.closed.Load():
			r.t.Fatalf("caller %d for %s: victim %v not closed", o.w.id, o.key, o.c)
		case c.closed.Load():
			r.t.Fatalf("caller %d for %s got closed %v", o.w.id, o.key, c)
		}
		for _, h := range r.md.held {
			if h.Conn() == c {
				r.t.Fatalf("caller %d got %v, which is leased already", o.w.id, c)
			}
		}
		r.md.seen[c] = true
		r.md.held = append(r.md.held, res.l)
	}
}

// check compares the Manager and the fake server with the model.
func (r *policyRun) check() {
	t, md := r.t, r.md
	ss := r.server.stats()
	if ss.maxOpen > md.budget {
		t.Fatalf("server had %d connections open at once, budget %d", ss.maxOpen, md.budget)
	}
	if ss.maxPerKey > md.perKey {
		t.Fatalf("server had %d connections of one key open at once, limit %d", ss.maxPerKey, md.perKey)
	}
	if ss.open != md.total {
		t.Fatalf("server has %d connections open, model %d", ss.open, md.total)
	}
	if ss.doubleCloses != 0 {
		t.Fatalf("%d connections closed twice", ss.doubleCloses)
	}
	keys := map[string]bool{}
	for k, n := range md.open {
		if n > 0 {
			keys[k] = true
		}
	}
	for _, w := range md.waiters {
		keys[w.key] = true
		select {
		case res := <-w.res:
			t.Fatalf("caller %d for %s served unexpectedly: %v, %v", w.id, w.key, res.l.Conn(), res.err)
		default:
		}
	}
	want := Stats{
		Open: md.total, InUse: len(md.held), Idle: len(md.idle), Waiting: len(md.waiters),
		Keys: len(keys), Dials: int64(ss.dials),
	}
	got := r.m.Stats()
	got.Evictions = 0
	if got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	for _, k := range append(slices.Clone(md.keys), refusedKey) {
		inUse := 0
		for _, l := range md.held {
			if l.Conn().key == k {
				inUse++
			}
		}
		if open, n := r.m.KeyStats(k); open != md.open[k] || n != inUse {
			t.Fatalf("KeyStats(%s) = %d, %d; want %d, %d", k, open, n, md.open[k], inUse)
		}
		if n := r.server.openFor(k); n != md.open[k] {
			t.Fatalf("server has %d connections of %s open, model %d", n, k, md.open[k])
		}
	}
	for _, l := range md.held {
		if l.Conn().closed.Load() {
			t.Fatalf("held connection %v was closed", l.Conn())
		}
	}
	for _, c := range md.idle {
		if c.closed.Load() {
			t.Fatalf("idle connection %v was closed", c)
		}
	}
}

// cleanup ends every caller and closes everything, also after a failure.
func (r *policyRun) cleanup() {
	for _, w := range r.md.waiters {
		w.cancel()
	}
	r.m.Close()
	synctest.Wait()
	for _, w := range r.md.waiters {
		select {
		case res := <-w.res:
			res.l.Release()
		default:
		}
	}
	for _, l := range r.md.held {
		l.Release()
	}
}
