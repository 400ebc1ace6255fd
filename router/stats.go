package router

import (
	"sort"
	"sync"
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

type txStats struct {
	mu sync.Mutex
	m  map[[2]string]*TxStat
}

func (s *txStats) observe(t *tenancy.Tenant, d time.Duration, err error) {
	k := [2]string{t.Placement.Server, string(t.Model)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[[2]string]*TxStat{}
	}
	st, ok := s.m[k]
	if !ok {
		st = &TxStat{Server: k[0], Model: t.Model}
		s.m[k] = st
	}
	if err != nil {
		st.Failed++
	} else {
		st.Committed++
	}
	st.Seconds += d.Seconds()
}

// TxStats returns the counts of tenant transactions by server and model
// (never by tenant), sorted by server and model.
func (r *Router) TxStats() []TxStat {
	r.txStats.mu.Lock()
	defer r.txStats.mu.Unlock()
	out := make([]TxStat, 0, len(r.txStats.m))
	for _, st := range r.txStats.m {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Server+"\x00"+string(out[i].Model) < out[j].Server+"\x00"+string(out[j].Model)
	})
	return out
}
