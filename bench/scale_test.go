package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/provision"
	"github.com/tenancyhq/tenancy/router"
)

var (
	scale         = flag.Bool("scale", false, "run the scale test")
	scaleShared   = flag.Int("scale.shared", 10000, "shared tenants at the last level")
	scaleSchema   = flag.Int("scale.schema", 2000, "schema tenants at the last level")
	scaleDatabase = flag.Int("scale.database", 200, "database tenants at the last level")
	scaleTraffic  = flag.Duration("scale.traffic", 20*time.Second, "traffic per level")
	scaleServers  = flag.Int("scale.servers", 1, "PostgreSQL servers; tenants are placed across them in turn")
	scaleBudget   = flag.Duration("scale.provision", 15*time.Minute, "stop growing once provisioning has taken this long in all")
)

const (
	scaleConns   = 50   // the server's connection budget
	scaleClients = 32   // concurrent clients of the traffic
	zipfS        = 1.1  // Zipf exponent: a few large tenants, many small ones
	writeShare   = 0.10 // share of transactions that insert
	provisioners = 3    // tenants provisioned at a time
)

// level is one size of the fleet.
type level struct{ shared, schema, database int }

func (l level) of(m tenancy.Model) int {
	switch m {
	case tenancy.ModelShared:
		return l.shared
	case tenancy.ModelSchema:
		return l.schema
	}
	return l.database
}

// levels grow by ten from a hundredth of the last level to it.
func levels() []level {
	last := level{*scaleShared, *scaleSchema, *scaleDatabase}
	var ls []level
	for _, d := range []int{100, 10, 1} {
		l := level{max(last.shared/d, 1), max(last.schema/d, 1), max(last.database/d, 1)}
		if len(ls) == 0 || ls[len(ls)-1] != l {
			ls = append(ls, l)
		}
	}
	return ls
}

// levelResult is what one level measured.
type levelResult struct {
	level       level
	provisioned map[tenancy.Model]time.Duration // to reach the level, per model
	p50, p99    map[tenancy.Model]time.Duration
	txs         map[tenancy.Model]int
	errs        int
	throughput  float64 // transactions per second, all models
	heapMiB     float64 // live heap after GC, with the tenants and pools
	maxConns    int     // the application role's connections, seen by PostgreSQL
	hitRate     float64 // catalog cache hits / lookups during the traffic
	dials       int64
	evictions   int64
}

// TestScale grows a fleet on one server with a connection budget of 50, and
// at each level serves Zipf-distributed traffic to every model; see doc.go.
func TestScale(t *testing.T) {
	if !*scale {
		t.Skip("the scale run is behind -scale")
	}
	fleet := map[tenancy.Model][]*tenancy.Tenant{}
	var b *tenanttest.Bundle
	// Registered first, so that it runs after the test's databases are dropped.
	t.Cleanup(func() {
		if b != nil {
			dropTenantObjects(t, b, fleet)
		}
	})
	b = tenanttest.Setup(t, &tenanttest.Opts{Servers: *scaleServers, MaxConnsPerServer: scaleConns})

	var admins []*pgx.Conn // one per server, to count connections
	for _, s := range b.Servers {
		admin, err := pgx.Connect(context.Background(), s.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		admins = append(admins, admin)
	}

	var results []levelResult
	var provisioning time.Duration
	for _, l := range levels() {
		res := levelResult{level: l, provisioned: map[tenancy.Model]time.Duration{}}
		for _, m := range tenancy.Models {
			start := time.Now()
			grow(t, b, m, l.of(m), fleet)
			res.provisioned[m] = time.Since(start)
			provisioning += res.provisioned[m]
		}
		traffic(t, b, admins, fleet, &res)
		results = append(results, res)
		t.Logf("level %+v: %s", l, res.line())
		if provisioning > *scaleBudget {
			t.Logf("provisioning has taken %v: not growing further", provisioning.Round(time.Second))
			break
		}
	}
	md := scaleMarkdown(results)
	t.Log("\n" + md)
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			t.Fatal(err)
		}
		name := "scale"
		if *scaleServers > 1 {
			name = fmt.Sprintf("scale-%d-servers", *scaleServers)
		}
		if err := os.WriteFile(filepath.Join(*out, name+".md"), []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writeScalePNG(filepath.Join(*out, name+".png"), results); err != nil {
			t.Fatal(err)
		}
	}
}

// grow provisions tenants of model m until there are n, a few at a time, on
// the servers in turn.
func grow(t *testing.T, b *tenanttest.Bundle, m tenancy.Model, n int, fleet map[tenancy.Model][]*tenancy.Tenant) {
	t.Helper()
	var next atomic.Int64
	next.Store(int64(len(fleet[m])))
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	todo := make(chan struct{})
	// 3, not more: each Create holds a catalog connection for its tenant lock
	// and needs another from the same pool (at least 4), so as many Creates as
	// the pool has connections deadlock (docs/RELIABILITY.md).
	for range provisioners {
		wg.Go(func() {
			for range todo {
				server := b.ServerNames[int(next.Add(1))%len(b.ServerNames)]
				tn, err := b.Platform.CreateTenant(context.Background(), &provision.CreateOpts{
					Slug: pgtest.UniqueName(string(m)[:2]), Model: m, Server: server,
				})
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					continue
				}
				mu.Lock()
				fleet[m] = append(fleet[m], tn)
				mu.Unlock()
			}
		})
	}
	for range n - len(fleet[m]) {
		todo <- struct{}{}
	}
	close(todo)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("provision a %s tenant: %v", m, *err)
	}
}

// traffic runs scaleClients closed-loop clients for scaleTraffic: each picks a
// model (by its share of the fleet, at least 10%), a tenant of it by Zipf, and
// runs a point read or, one time in ten, an insert.
func traffic(t *testing.T, b *tenanttest.Bundle, admins []*pgx.Conn, fleet map[tenancy.Model][]*tenancy.Tenant, res *levelResult) {
	t.Helper()
	r := b.Platform.Router
	cache := b.Platform.Cache
	before := cache.Stats()
	stats := func() (st router.Stats) {
		for _, name := range b.ServerNames {
			s := r.Stats(name)
			st.Dials += s.Dials
			st.Evictions += s.Evictions
		}
		return st
	}
	stBefore := stats()

	ctx, cancel := context.WithTimeout(context.Background(), *scaleTraffic)
	defer cancel()
	var mu sync.Mutex
	lat := map[tenancy.Model][]time.Duration{}
	var errs atomic.Int64
	var firstErr atomic.Pointer[error]

	var wg sync.WaitGroup
	for c := range scaleClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			zipf := map[tenancy.Model]*rand.Zipf{}
			for _, m := range tenancy.Models {
				zipf[m] = rand.NewZipf(rng, zipfS, 1, uint64(len(fleet[m])-1))
			}
			var local []struct {
				m tenancy.Model
				d time.Duration
			}
			for ctx.Err() == nil {
				m := tenancy.Models[rng.IntN(len(tenancy.Models))]
				tn := fleet[m][zipf[m].Uint64()]
				tctx, tcancel := context.WithTimeout(tenancy.WithTenant(context.Background(), tn), 5*time.Second)
				start := time.Now()
				write := rng.Float64() < writeShare
				err := r.Tx(tctx, func(tx pgx.Tx) error {
					if write {
						_, err := tx.Exec(tctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'someone', $2)`, tn.ID, email())
						return err
					}
					var name string
					err := tx.QueryRow(tctx, `SELECT name FROM contacts WHERE tenant_id = $1 AND id = $2`, tn.ID, rng.Int64N(100)+1).Scan(&name)
					if errors.Is(err, pgx.ErrNoRows) {
						return nil
					}
					return err
				})
				d := time.Since(start)
				tcancel()
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				local = append(local, struct {
					m tenancy.Model
					d time.Duration
				}{m, d})
			}
			mu.Lock()
			for _, x := range local {
				lat[x.m] = append(lat[x.m], x.d)
			}
			mu.Unlock()
		})
	}
	// PostgreSQL's own count of the application role's connections, on the
	// busiest server.
	appConns := func() int {
		most := 0
		for _, admin := range admins {
			var n int
			_ = admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, b.AppRole).Scan(&n)
			most = max(most, n)
		}
		return most
	}
	tick := time.NewTicker(100 * time.Millisecond)
	for ctx.Err() == nil {
		res.maxConns = max(res.maxConns, appConns())
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		t.Logf("first error of %d: %v", errs.Load(), *err)
	}

	after := cache.Stats()
	st := stats()
	res.errs = int(errs.Load())
	res.p50, res.p99, res.txs = map[tenancy.Model]time.Duration{}, map[tenancy.Model]time.Duration{}, map[tenancy.Model]int{}
	total := 0
	for m, ds := range lat {
		slices.Sort(ds)
		res.p50[m], res.p99[m], res.txs[m] = ds[len(ds)/2], ds[len(ds)*99/100], len(ds)
		total += len(ds)
	}
	res.throughput = float64(total) / scaleTraffic.Seconds()
	hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
	if hits+misses > 0 {
		res.hitRate = float64(hits) / float64(hits+misses)
	}
	res.dials, res.evictions = st.Dials-stBefore.Dials, st.Evictions-stBefore.Evictions
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.heapMiB = float64(ms.HeapAlloc) / (1 << 20)
	if res.maxConns > scaleConns {
		t.Errorf("PostgreSQL saw %d connections of the application role on one server, over the budget of %d", res.maxConns, scaleConns)
	}
}

func (r levelResult) line() string {
	var parts []string
	for _, m := range tenancy.Models {
		parts = append(parts, fmt.Sprintf("%s p50 %v p99 %v (%d tx, provisioned in %v)", m,
			r.p50[m].Round(10*time.Microsecond), r.p99[m].Round(10*time.Microsecond), r.txs[m], r.provisioned[m].Round(time.Millisecond)))
	}
	return fmt.Sprintf("%s; %.0f tx/s, %d errors, heap %.1f MiB, max %d server connections, cache hit rate %.4f, %d dials, %d evictions",
		strings.Join(parts, "; "), r.throughput, r.errs, r.heapMiB, r.maxConns, r.hitRate, r.dials, r.evictions)
}

func scaleMarkdown(results []levelResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d server(s), connection budget %d each (max server conns: the busiest server); %d closed-loop clients for %v per level; each transaction picks a model uniformly, a tenant of it by Zipf (s = %.1f), and runs a point read (or, one time in ten, an insert). %d CPUs, shared with the PostgreSQL server.\n\n",
		*scaleServers, scaleConns, scaleClients, *scaleTraffic, zipfS, runtime.NumCPU())
	b.WriteString("| tenants (shared / schema / database) | shared p50 / p99 | schema p50 / p99 | database p50 / p99 | tx/s | errors | app heap | max server conns | cache hit rate | dials / evictions |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }
	for _, r := range results {
		fmt.Fprintf(&b, "| %d / %d / %d |", r.level.shared, r.level.schema, r.level.database)
		for _, m := range tenancy.Models {
			fmt.Fprintf(&b, " %s / %s ms |", ms(r.p50[m]), ms(r.p99[m]))
		}
		fmt.Fprintf(&b, " %.0f | %d | %.1f MiB | %d | %.2f%% | %d / %d |\n", r.throughput, r.errs, r.heapMiB, r.maxConns, 100*r.hitRate, r.dials, r.evictions)
	}
	fmt.Fprintf(&b, "\nProvisioning to reach each level, %d tenants at a time (wall time, and wall time per tenant):\n\n| tenants | shared | schema | database |\n|---|---:|---:|---:|\n", provisioners)
	prev := level{}
	for _, r := range results {
		fmt.Fprintf(&b, "| %d / %d / %d |", r.level.shared, r.level.schema, r.level.database)
		for _, m := range tenancy.Models {
			n := r.level.of(m) - prev.of(m)
			per := time.Duration(0)
			if n > 0 {
				per = r.provisioned[m] / time.Duration(n)
			}
			fmt.Fprintf(&b, " %d in %v (%v each) |", n, r.provisioned[m].Round(100*time.Millisecond), per.Round(time.Millisecond))
		}
		b.WriteString("\n")
		prev = r.level
	}
	return b.String()
}

// dropTenantObjects drops what outlives the test's databases: the databases
// and roles of the tenants the test provisioned.
func dropTenantObjects(t *testing.T, b *tenanttest.Bundle, fleet map[tenancy.Model][]*tenancy.Tenant) {
	ctx := context.Background()
	conns := map[string]*pgx.Conn{}
	for i, name := range b.ServerNames {
		conn, err := pgx.Connect(ctx, b.Servers[i].URL("postgres"))
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		conns[name] = conn
	}
	for _, m := range tenancy.Models {
		for _, tn := range fleet[m] {
			conn := conns[tn.Placement.Server]
			if m == tenancy.ModelDatabase {
				_ = dataplane.DropDatabase(ctx, conn, tn.Placement.Database)
			}
			if m != tenancy.ModelShared {
				_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+dataplane.Ident(tn.Role()))
			}
		}
	}
}
