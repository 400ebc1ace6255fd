package router

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

// TestDBBudget: a tenant that spent more database time than its budget is
// refused until it has earned the debt back, told how long that takes; an
// idle tenant keeps at most one second's worth.
func TestDBBudget(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	d := &dbBudget{now: func() time.Time { return now }}
	id, other := uuid.New(), uuid.New()
	if ok, _ := d.allow(id, 0.1); !ok {
		t.Fatal("a new tenant is refused")
	}
	d.charge(id, 0.1, 500*time.Millisecond) // 0.1 - 0.5: 0.4 s in debt
	ok, wait := d.allow(id, 0.1)
	if ok || wait != 4*time.Second {
		t.Fatalf("in debt: allowed %v, wait %v; want refused for 4s", ok, wait)
	}
	if ok, _ := d.allow(other, 0.1); !ok {
		t.Fatal("another tenant pays for the first one's debt")
	}
	now = now.Add(3900 * time.Millisecond)
	if ok, _ := d.allow(id, 0.1); ok {
		t.Fatal("allowed before the debt is paid")
	}
	now = now.Add(100 * time.Millisecond)
	if ok, _ := d.allow(id, 0.1); !ok {
		t.Fatal("refused once the debt is paid")
	}
	// A long rest earns at most the cap: 0.1 s, so 0.2 s puts it in debt.
	now = now.Add(time.Hour)
	d.charge(id, 0.1, 200*time.Millisecond)
	if ok, wait := d.allow(id, 0.1); ok || wait != time.Second {
		t.Fatalf("after a rest and 0.2 s spent: allowed %v, wait %v; want refused for 1s", ok, wait)
	}
}

// TestDBBudgetProperty: whatever transactions a tenant runs one after
// another, those it is allowed to start spend at most its rate times the
// time elapsed, plus one second's worth, plus the last transaction (which
// can overdraw).
func TestDBBudgetProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(rt *rapid.T) {
		rate := rapid.Float64Range(0.01, 2).Draw(rt, "rate")
		now := time.Unix(0, 0)
		d := &dbBudget{now: func() time.Time { return now }}
		id := uuid.New()
		var spent, last time.Duration
		for i := range rapid.IntRange(1, 60).Draw(rt, "txs") {
			now = now.Add(time.Duration(rapid.IntRange(0, 2000).Draw(rt, "gap_ms")) * time.Millisecond)
			if ok, wait := d.allow(id, rate); !ok {
				if wait <= 0 {
					rt.Fatalf("tx %d refused with no wait", i)
				}
				continue
			}
			last = time.Duration(rapid.IntRange(0, 3000).Draw(rt, "tx_ms")) * time.Millisecond
			now = now.Add(last)
			d.charge(id, rate, last)
			spent += last
		}
		bound := time.Duration(rate*float64(now.Sub(time.Unix(0, 0))+time.Second)) + last
		if spent > bound+time.Millisecond {
			rt.Fatalf("spent %v in %v at rate %g: more than %v", spent, now.Sub(time.Unix(0, 0)), rate, bound)
		}
	})
}

// TestDBBudgetForgets: the budget keeps the tenants that spent recently, not
// every tenant ever served.
func TestDBBudgetForgets(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	d := &dbBudget{now: func() time.Time { return now }}
	for range 3000 {
		d.charge(uuid.New(), 1, time.Millisecond)
		now = now.Add(time.Millisecond)
	}
	if n := len(d.tenants); n > 1100 {
		t.Errorf("%d tenants kept", n)
	}
}
