package router

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// dbBudget keeps each tenant's budget of database time (tenancy.Limits.DBTime)
// on this router: a balance in seconds that earns rate seconds per second up to
// its cap, and is charged the time each transaction held a connection. A
// tenant in debt is refused until it has earned the debt back; a transaction
// may overdraw the balance (its cost is only known at its end), which is then
// paid back by waiting.
type dbBudget struct {
	mu      sync.Mutex
	tenants map[uuid.UUID]*balance
	now     func() time.Time // time.Now; tests give a fake clock
}

type balance struct {
	seconds float64   // earned minus spent, at most the cap
	at      time.Time // when seconds was last brought up to date
	rate    float64   // seconds earned per second, as of the last call
}

// budgetWindow is how much unused budget a tenant keeps: its rate times this
// (a tenant idle for a while may spend one second's worth at once).
const budgetWindow = time.Second

// earn brings b up to date at now with rate.
func (b *balance) earn(now time.Time, rate float64) {
	b.seconds = min(b.seconds+now.Sub(b.at).Seconds()*b.rate, rate*budgetWindow.Seconds())
	b.at, b.rate = now, rate
}

// allow reports whether the tenant may start a transaction at rate seconds
// of database time per second, and if not how long until it may.
func (d *dbBudget) allow(id uuid.UUID, rate float64) (bool, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	b := d.tenants[id]
	if b == nil {
		return true, 0 // a full balance: nothing to keep
	}
	b.earn(now, rate)
	if b.seconds >= -1e-9 { // paid back, up to float rounding
		return true, 0
	}
	return false, time.Duration(-b.seconds / rate * float64(time.Second))
}

// charge takes spent from the tenant's balance at rate.
func (d *dbBudget) charge(id uuid.UUID, rate float64, spent time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if d.tenants == nil {
		d.tenants = map[uuid.UUID]*balance{}
	}
	b := d.tenants[id]
	if b == nil {
		b = &balance{seconds: rate * budgetWindow.Seconds(), at: now, rate: rate}
		d.tenants[id] = b
	}
	b.earn(now, rate)
	b.seconds -= spent.Seconds()
	d.forgetFull(now)
}

// forgetFull drops, when many tenants are kept, those whose balance is full
// again: the map holds the tenants that spent recently, not every tenant
// ever served. d.mu is held.
func (d *dbBudget) forgetFull(now time.Time) {
	if len(d.tenants) < 1024 {
		return
	}
	for id, b := range d.tenants {
		if b.seconds+now.Sub(b.at).Seconds()*b.rate >= b.rate*budgetWindow.Seconds() {
			delete(d.tenants, id)
		}
	}
}
