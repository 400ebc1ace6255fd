package serve

import (
	"net/http"
	"testing"
	"time"
)

// TestTenantSeries: requests and 429s land in their minute, a minute's slot is
// reused only for a later minute, and the series ends at the current minute.
func TestTenantSeries(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 30, 0, time.UTC)
	c := newTenantCounts()
	c.now = func() time.Time { return now }
	c.count("acme", http.StatusOK)
	c.count("acme", http.StatusTooManyRequests)
	c.count("acme", http.StatusNotFound) // not counted
	now = now.Add(2 * time.Minute)
	c.count("acme", http.StatusOK)
	now = now.Add((seriesMinutes - 2) * time.Minute) // 12:30 reuses the slot of 12:00
	c.count("acme", http.StatusOK)

	s := c.series("acme")
	if len(s) != seriesMinutes || !s[len(s)-1].At.Equal(now.Truncate(time.Minute)) {
		t.Fatalf("%d points ending %v, want %d ending at the current minute %v", len(s), s[len(s)-1].At, seriesMinutes, now.Truncate(time.Minute))
	}
	var requests, limited int64
	for _, p := range s {
		requests += p.Requests
		limited += p.RateLimited
	}
	// In the window (12:01 to 12:30): 12:02 (one request) and now (one);
	// 12:00 fell out of it.
	if requests != 2 || limited != 0 || s[len(s)-1].Requests != 1 {
		t.Errorf("window holds %d requests, %d limited, %d now: want 2, 0, 1", requests, limited, s[len(s)-1].Requests)
	}
	if r, l := c.get("acme"); r != 4 || l != 1 {
		t.Errorf("totals %d, %d: want 4, 1", r, l)
	}
	if s := c.series("nobody"); len(s) != seriesMinutes || s[0].Requests != 0 {
		t.Errorf("an unknown tenant's series: %v", s)
	}
}
