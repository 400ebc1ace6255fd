package router

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenancyhq/tenancy"
)

// TxStat counts the tenant transactions of one server and isolation model on
// this router since it started.
type TxStat struct {
	Server    string
	Model     tenancy.Model
	Committed int64
	Failed    int64
	// Seconds is the time spent in those transactions, from the tenant's
	// resolution to the commit or rollback.
	Seconds float64
}

// txStats counts transactions per server and model. It is on every
// transaction's path, so the counters are atomic and the map is read without
// a lock once a pair has been seen.
type txStats struct{ m sync.Map } // [2]string{server, model} → *txCounter

type txCounter struct {
	committed, failed, nanos atomic.Int64
}

func (s *txStats) observe(t *tenancy.Tenant, d time.Duration, err error) {
	k := [2]string{t.Placement.Server, string(t.Model)}
	v, ok := s.m.Load(k)
	if !ok {
		v, _ = s.m.LoadOrStore(k, new(txCounter))
	}
	c := v.(*txCounter)
	if err != nil {
		c.failed.Add(1)
	} else {
		c.committed.Add(1)
	}
	c.nanos.Add(int64(d))
}

// TxStats returns the counts of tenant transactions by server and model
// (never by tenant), sorted by server and model.
func (r *Router) TxStats() []TxStat {
	var out []TxStat
	r.txStats.m.Range(func(k, v any) bool {
		key, c := k.([2]string), v.(*txCounter)
		out = append(out, TxStat{Server: key[0], Model: tenancy.Model(key[1]), Committed: c.committed.Load(),
			Failed: c.failed.Load(), Seconds: time.Duration(c.nanos.Load()).Seconds()})
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].Server+"\x00"+string(out[i].Model) < out[j].Server+"\x00"+string(out[j].Model)
	})
	return out
}
