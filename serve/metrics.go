package serve

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tenancyhq/tenancy/platform"
)

// metrics counts requests by area and status class, and reads the rest
// (tenants, connections, cache) at scrape time. No label carries a tenant.
type metrics struct {
	p *platform.Platform

	mu       sync.Mutex
	requests map[[2]string]uint64 // area, status class
	seconds  map[string]float64   // area
	counts   map[string]uint64    // area
}

func newMetrics(p *platform.Platform) *metrics {
	return &metrics{p: p, requests: map[[2]string]uint64{}, seconds: map[string]float64{}, counts: map[string]uint64{}}
}

func (m *metrics) observe(area string, status int, d time.Duration) {
	class := strconv.Itoa(status/100) + "xx"
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[[2]string{area, class}]++
	m.seconds[area] += d.Seconds()
	m.counts[area]++
}

// serve writes the Prometheus text exposition format.
func (m *metrics) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.mu.Lock()
	fmt.Fprintln(w, "# HELP tenancy_http_requests_total HTTP requests by area and status class.")
	fmt.Fprintln(w, "# TYPE tenancy_http_requests_total counter")
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		fmt.Fprintf(w, "tenancy_http_requests_total{area=%q,code=%q} %d\n", k[0], k[1], m.requests[k])
	}
	fmt.Fprintln(w, "# HELP tenancy_http_request_duration_seconds Time spent serving requests, by area.")
	fmt.Fprintln(w, "# TYPE tenancy_http_request_duration_seconds summary")
	areas := make([]string, 0, len(m.counts))
	for a := range m.counts {
		areas = append(areas, a)
	}
	sort.Strings(areas)
	for _, a := range areas {
		fmt.Fprintf(w, "tenancy_http_request_duration_seconds_sum{area=%q} %g\n", a, m.seconds[a])
		fmt.Fprintf(w, "tenancy_http_request_duration_seconds_count{area=%q} %d\n", a, m.counts[a])
	}
	m.mu.Unlock()

	ctx := r.Context()
	if ts, err := m.p.Catalog.Tenants(ctx, nil); err == nil {
		byLabels := map[[3]string]int{}
		for _, t := range ts {
			byLabels[[3]string{string(t.Model), string(t.Tier), string(t.Status)}]++
		}
		fmt.Fprintln(w, "# HELP tenancy_tenants Tenants by model, tier and status.")
		fmt.Fprintln(w, "# TYPE tenancy_tenants gauge")
		lk := make([][3]string, 0, len(byLabels))
		for k := range byLabels {
			lk = append(lk, k)
		}
		sort.Slice(lk, func(i, j int) bool { return fmt.Sprint(lk[i]) < fmt.Sprint(lk[j]) })
		for _, k := range lk {
			fmt.Fprintf(w, "tenancy_tenants{model=%q,tier=%q,status=%q} %d\n", k[0], k[1], k[2], byLabels[k])
		}
	}
	if ss, err := m.p.Catalog.Servers(ctx); err == nil {
		fmt.Fprintln(w, "# HELP tenancy_router_connections The router's connections to each server, by state.")
		fmt.Fprintln(w, "# TYPE tenancy_router_connections gauge")
		for _, s := range ss {
			st := m.p.Router.Stats(s.Name)
			fmt.Fprintf(w, "tenancy_router_connections{server=%q,state=\"in_use\"} %d\n", s.Name, st.InUse)
			fmt.Fprintf(w, "tenancy_router_connections{server=%q,state=\"idle\"} %d\n", s.Name, st.Idle)
		}
		fmt.Fprintln(w, "# HELP tenancy_router_waiting Callers waiting for a connection to each server.")
		fmt.Fprintln(w, "# TYPE tenancy_router_waiting gauge")
		for _, s := range ss {
			fmt.Fprintf(w, "tenancy_router_waiting{server=%q} %d\n", s.Name, m.p.Router.Stats(s.Name).Waiting)
		}
	}
	cs := m.p.Cache.Stats()
	fmt.Fprintln(w, "# HELP tenancy_catalog_cache_lookups_total Tenant lookups in the catalog cache.")
	fmt.Fprintln(w, "# TYPE tenancy_catalog_cache_lookups_total counter")
	fmt.Fprintf(w, "tenancy_catalog_cache_lookups_total{result=\"hit\"} %d\n", cs.Hits)
	fmt.Fprintf(w, "tenancy_catalog_cache_lookups_total{result=\"miss\"} %d\n", cs.Misses)
}
