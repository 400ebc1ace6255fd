package serve

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// metrics counts requests by area and status class, and reads the rest
// (tenants, connections, cache) at scrape time. No label carries a tenant.
type metrics struct {
	p *platform.Platform

	mu       sync.Mutex
	requests map[[2]string]uint64 // area, status class
	seconds  map[string]float64   // area
	counts   map[string]uint64    // area
	limited  map[[2]string]uint64 // tier, model: requests answered 429
}

func newMetrics(p *platform.Platform) *metrics {
	return &metrics{p: p, requests: map[[2]string]uint64{}, seconds: map[string]float64{}, counts: map[string]uint64{},
		limited: map[[2]string]uint64{}}
}

// rateLimited counts a request of a tenant of this tier and model answered 429.
func (m *metrics) rateLimited(tier tenancy.Tier, model tenancy.Model) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limited[[2]string{string(tier), string(model)}]++
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
	fmt.Fprintln(w, "# HELP tenancy_http_rate_limited_total Requests answered 429, by the tenant's tier and model.")
	fmt.Fprintln(w, "# TYPE tenancy_http_rate_limited_total counter")
	lks := make([][2]string, 0, len(m.limited))
	for k := range m.limited {
		lks = append(lks, k)
	}
	sort.Slice(lks, func(i, j int) bool { return lks[i][0]+"\x00"+lks[i][1] < lks[j][0]+"\x00"+lks[j][1] })
	for _, k := range lks {
		fmt.Fprintf(w, "tenancy_http_rate_limited_total{tier=%q,model=%q} %d\n", k[0], k[1], m.limited[k])
	}
	m.mu.Unlock()

	fmt.Fprintln(w, "# HELP tenancy_router_transactions_total Tenant transactions, by server, model and outcome.")
	fmt.Fprintln(w, "# TYPE tenancy_router_transactions_total counter")
	txs := m.p.Router.TxStats()
	for _, st := range txs {
		fmt.Fprintf(w, "tenancy_router_transactions_total{server=%q,model=%q,outcome=\"committed\"} %d\n", st.Server, st.Model, st.Committed)
		fmt.Fprintf(w, "tenancy_router_transactions_total{server=%q,model=%q,outcome=\"failed\"} %d\n", st.Server, st.Model, st.Failed)
	}
	fmt.Fprintln(w, "# HELP tenancy_router_transaction_seconds_total Time spent in tenant transactions, by server and model.")
	fmt.Fprintln(w, "# TYPE tenancy_router_transaction_seconds_total counter")
	for _, st := range txs {
		fmt.Fprintf(w, "tenancy_router_transaction_seconds_total{server=%q,model=%q} %g\n", st.Server, st.Model, st.Seconds)
	}

	ctx := r.Context()
	var moves int64
	if err := m.p.Catalog.Pool().QueryRow(ctx, `SELECT count(*) FROM catalog.moves WHERE state NOT IN ('done', 'rolled_back')`).Scan(&moves); err == nil {
		fmt.Fprintln(w, "# HELP tenancy_moves_in_progress Tenant moves started and not finished or rolled back.")
		fmt.Fprintln(w, "# TYPE tenancy_moves_in_progress gauge")
		fmt.Fprintf(w, "tenancy_moves_in_progress %d\n", moves)
	}
	if running, err := migrate.InProgress(ctx, m.p.Catalog); err == nil {
		fmt.Fprintln(w, "# HELP tenancy_migrations_in_progress 1 while a fleet migration runs, else 0.")
		fmt.Fprintln(w, "# TYPE tenancy_migrations_in_progress gauge")
		n := 0
		if running {
			n = 1
		}
		fmt.Fprintf(w, "tenancy_migrations_in_progress %d\n", n)
	}
	if rows, err := m.p.Catalog.Pool().Query(ctx, `SELECT kind, count(*) FROM catalog.operations WHERE state IN ('running', 'failed') GROUP BY kind ORDER BY kind`); err == nil {
		kinds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]any, error) {
			var kind string
			var n int64
			err := r.Scan(&kind, &n)
			return [2]any{kind, n}, err
		})
		if err == nil {
			fmt.Fprintln(w, "# HELP tenancy_operations_unfinished Lifecycle operations (provision, purge, …) running or failed and not yet finished, by kind.")
			fmt.Fprintln(w, "# TYPE tenancy_operations_unfinished gauge")
			for _, k := range kinds {
				fmt.Fprintf(w, "tenancy_operations_unfinished{kind=%q} %d\n", k[0], k[1])
			}
		}
	}
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
	if rl, ok := m.p.Limiter.(*ratelimit.Redis); ok {
		rs := rl.Stats()
		down := 0
		if rs.Down {
			down = 1
		}
		fmt.Fprintln(w, "# HELP tenancy_ratelimit_redis_down 1 while the rate limiter takes Redis as unavailable, else 0.")
		fmt.Fprintln(w, "# TYPE tenancy_ratelimit_redis_down gauge")
		fmt.Fprintf(w, "tenancy_ratelimit_redis_down %d\n", down)
		fmt.Fprintln(w, "# HELP tenancy_ratelimit_redis_events_total Calls to Redis that failed, and decisions made without it (by the node's own limiter, or denied when failing closed).")
		fmt.Fprintln(w, "# TYPE tenancy_ratelimit_redis_events_total counter")
		fmt.Fprintf(w, "tenancy_ratelimit_redis_events_total{event=\"failure\"} %d\n", rs.Failures)
		fmt.Fprintf(w, "tenancy_ratelimit_redis_events_total{event=\"fallback\"} %d\n", rs.Fallbacks)
		fmt.Fprintf(w, "tenancy_ratelimit_redis_events_total{event=\"denial\"} %d\n", rs.Denials)
	}
	cs := m.p.Cache.Stats()
	fmt.Fprintln(w, "# HELP tenancy_catalog_cache_lookups_total Tenant lookups in the catalog cache.")
	fmt.Fprintln(w, "# TYPE tenancy_catalog_cache_lookups_total counter")
	fmt.Fprintf(w, "tenancy_catalog_cache_lookups_total{result=\"hit\"} %d\n", cs.Hits)
	fmt.Fprintf(w, "tenancy_catalog_cache_lookups_total{result=\"miss\"} %d\n", cs.Misses)
}
