package serve

import (
	"net/http"
	"sync"
	"time"

	"github.com/tenancyhq/tenancy/controlapi"
)

// maxCountedTenants bounds the per-tenant counters, whatever paths clients
// invent.
const maxCountedTenants = 100_000

// seriesMinutes is how many minutes of per-minute counts each tenant keeps,
// for the dashboard's charts.
const seriesMinutes = 30

// tenantCounts counts each tenant's requests and 429s on this node, in total
// and per minute over the last seriesMinutes, for the control API's usage
// (not for metrics: they carry no tenant).
type tenantCounts struct {
	mu  sync.Mutex
	m   map[string]*tenantCount
	now func() time.Time
}

type tenantCount struct {
	total [2]int64 // requests, rate limited
	// minutes[i] counts the minute minute[i] (Unix minutes); a slot holds
	// the latest minute whose number is i modulo seriesMinutes.
	minutes [seriesMinutes][2]int32
	minute  [seriesMinutes]int64
}

func newTenantCounts() *tenantCounts {
	return &tenantCounts{m: map[string]*tenantCount{}, now: time.Now}
}

// count counts a request answered with status. Requests for tenants that do
// not exist (404), are gone (410) or are malformed (400) are not counted.
func (c *tenantCounts) count(slug string, status int) {
	switch status {
	case http.StatusNotFound, http.StatusGone, http.StatusBadRequest:
		return
	}
	minute := c.now().Unix() / 60
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[slug]
	if !ok {
		if len(c.m) >= maxCountedTenants {
			return
		}
		n = new(tenantCount)
		c.m[slug] = n
	}
	i := minute % seriesMinutes
	if n.minute[i] != minute {
		n.minute[i], n.minutes[i] = minute, [2]int32{}
	}
	n.total[0]++
	n.minutes[i][0]++
	if status == http.StatusTooManyRequests {
		n.total[1]++
		n.minutes[i][1]++
	}
}

func (c *tenantCounts) get(slug string) (requests, rateLimited int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.m[slug]; ok {
		return n.total[0], n.total[1]
	}
	return 0, 0
}

// series returns the tenant's requests and 429s per minute over the last
// seriesMinutes minutes, oldest first, the current minute last.
func (c *tenantCounts) series(slug string) []controlapi.UsagePoint {
	now := c.now().Unix() / 60
	out := make([]controlapi.UsagePoint, seriesMinutes)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.m[slug]
	for k := range out {
		minute := now - int64(seriesMinutes-1-k)
		p := controlapi.UsagePoint{At: time.Unix(minute*60, 0).UTC()}
		if i := minute % seriesMinutes; n != nil && n.minute[i] == minute {
			p.Requests, p.RateLimited = int64(n.minutes[i][0]), int64(n.minutes[i][1])
		}
		out[k] = p
	}
	return out
}
