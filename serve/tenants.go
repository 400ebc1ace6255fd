package serve

import (
	"net/http"
	"sync"
)

// maxCountedTenants bounds the per-tenant counters, whatever paths clients
// invent.
const maxCountedTenants = 100_000

// tenantCounts counts each tenant's requests and 429s on this node, for the
// control API's usage (not for metrics: they carry no tenant).
type tenantCounts struct {
	mu sync.Mutex
	m  map[string]*[2]int64 // requests, rate limited
}

func newTenantCounts() *tenantCounts { return &tenantCounts{m: map[string]*[2]int64{}} }

// count counts a request answered with status. Requests for tenants that do
// not exist (404), are gone (410) or are malformed (400) are not counted.
func (c *tenantCounts) count(slug string, status int) {
	switch status {
	case http.StatusNotFound, http.StatusGone, http.StatusBadRequest:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[slug]
	if !ok {
		if len(c.m) >= maxCountedTenants {
			return
		}
		n = new([2]int64)
		c.m[slug] = n
	}
	n[0]++
	if status == http.StatusTooManyRequests {
		n[1]++
	}
}

func (c *tenantCounts) get(slug string) (requests, rateLimited int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.m[slug]; ok {
		return n[0], n[1]
	}
	return 0, 0
}
