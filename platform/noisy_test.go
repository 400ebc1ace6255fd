package platform_test

import (
	"context"
	"flag"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// The noisy-neighbour benchmark. Two tenants run a steady load of cheap
// requests, first alone (baseline), then while a third floods at 20 times its
// request limit with expensive queries. It reports the others' latency and
// throughput in both runs, what the flooder got, and the most server
// connections the flooder held (sampled from pg_stat_activity: the flooder
// has a database of its own, so its connections are those to that database).
//
//	TENANCY_BENCH_NOISY=1 go test ./platform -run TestNoisyNeighbour -count=1 -v [-args -flood-cap 2 -flood-timeout 50ms -flood-dbtime 0.05 -rounds 3 -flood-unlimited]
const (
	noisyPhase   = 4 * time.Second
	normalRPS    = 50 // per other tenant, under their plan's 200
	flooderLimit = 5  // the flood plan's requests per second
	flooderRate  = 20 * flooderLimit
)

// The flood plan's cap on concurrent transactions and statement timeout.
var (
	flooderCap     = flag.Int("flood-cap", 2, "the flooder's cap on concurrent transactions")
	flooderTimeout = flag.Duration("flood-timeout", 50*time.Millisecond, "the flooder's statement timeout")
	// floodUnlimited gives the flooder a plan without limits, for reference:
	// what the limits protect from.
	floodUnlimited = flag.Bool("flood-unlimited", false, "give the flooder no limits at all")
	flooderDBTime  = flag.Float64("flood-dbtime", 0, "the flooder's budget of database time, seconds per second (0: none)")
	noisyRounds    = flag.Int("rounds", 3, "rounds of baseline then flood")
)

type phaseResult struct {
	latencies []time.Duration // of the others' successful requests
	ok, fail  int64           // the others' outcomes
	elapsed   time.Duration
	flood     map[int]int // the flooder's statuses
	mostConns int         // the most connections open to the flooder's database at once
}

func TestNoisyNeighbour(t *testing.T) {
	if os.Getenv("TENANCY_BENCH_NOISY") == "" {
		t.Skip("a benchmark of about 40 seconds: set TENANCY_BENCH_NOISY=1 to run it")
	}
	ctx := context.Background()
	b := tenanttest.Setup(t, &tenanttest.Opts{
		MaxConnsPerServer: 10,
		Limits:            &platform.LimitsConfig{TxWait: 100 * time.Millisecond},
	})
	p := b.Platform
	floodPlan := tenancy.Limits{RPS: flooderLimit, Burst: flooderLimit, MaxConcurrentTx: *flooderCap, StatementTimeout: *flooderTimeout, DBTime: *flooderDBTime}
	if *floodUnlimited {
		floodPlan = tenancy.Limits{}
	}
	for tier, l := range map[tenancy.Tier]tenancy.Limits{
		"normal": {RPS: 200, Burst: 50, MaxConcurrentTx: 4, StatementTimeout: time.Second},
		"flood":  floodPlan,
	} {
		if err := p.Catalog.SetPlan(ctx, &catalog.Plan{Tier: tier, Limits: l}); err != nil {
			t.Fatal(err)
		}
	}
	create := func(tier tenancy.Tier, m tenancy.Model) *tenancy.Tenant {
		tn, err := p.CreateTenant(ctx, &provision.CreateOpts{Slug: pgtest.UniqueName("nn"), Model: m, Tier: tier})
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	others := []*tenancy.Tenant{create("normal", tenancy.ModelShared), create("normal", tenancy.ModelShared)}
	flooder := create("flood", tenancy.ModelDatabase)
	for _, tn := range others {
		seedContacts(t, p, tn, 200)
	}

	srv := limitServer(t, p)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 10 * time.Second}
	admin, err := pgx.Connect(ctx, b.Server(flooder.Placement.Server).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	run := func(flood bool, d time.Duration) phaseResult {
		res := phaseResult{flood: map[int]int{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		// open-loop load: one request every 1/rate, each in its own goroutine.
		load := func(tn *tenancy.Tenant, rate int, url string, record func(status int, d time.Duration)) {
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					wg.Go(func() {
						start := time.Now()
						req, _ := http.NewRequest(http.MethodGet, url, nil)
						req.Header.Set("X-Tenant", tn.Slug)
						r, err := client.Do(req)
						status := 0
						if err == nil {
							r.Body.Close()
							status = r.StatusCode
						}
						record(status, time.Since(start))
					})
				}
			}
		}
		cheap, heavy := srv.URL+"?q=cheap&arg=1", srv.URL+"?q=heavy&arg=1"
		for _, tn := range others {
			wg.Go(func() {
				load(tn, normalRPS, cheap, func(status int, d time.Duration) {
					mu.Lock()
					defer mu.Unlock()
					if status == http.StatusNoContent {
						res.ok++
						res.latencies = append(res.latencies, d)
					} else {
						res.fail++
					}
				})
			})
		}
		var most atomic.Int64
		if flood {
			wg.Go(func() {
				load(flooder, flooderRate, heavy, func(status int, _ time.Duration) {
					mu.Lock()
					defer mu.Unlock()
					res.flood[status]++
				})
			})
			wg.Go(func() { // sample the flooder's connections every 5ms
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					// Every connection to the flooder's database is one of
					// its own (the application role runs with
					// track_activities off, so state says nothing more).
					var n int64
					if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`,
						flooder.Placement.Database).Scan(&n); err != nil {
						t.Error(err)
						return
					}
					if n > most.Load() {
						most.Store(n)
					}
				}
			})
		}
		start := time.Now()
		time.Sleep(d)
		close(stop)
		wg.Wait()
		res.elapsed = time.Since(start)
		res.mostConns = int(most.Load())
		return res
	}

	run(false, 2*time.Second) // warm up: connections, prepared statements, caches
	// Baseline and flood alternate, so that a change of the machine's load
	// (other processes) weighs on both alike.
	var base, noisy phaseResult
	pct := func(l []time.Duration, q float64) time.Duration {
		if len(l) == 0 {
			return 0
		}
		l = slices.Clone(l)
		slices.Sort(l)
		return l[min(int(float64(len(l))*q), len(l)-1)]
	}
	for round := range *noisyRounds {
		b, n := run(false, noisyPhase), run(true, noisyPhase)
		t.Logf("round %d: others' p99 %.2fms alone, %.2fms beside the flood", round+1, ms(pct(b.latencies, 0.99)), ms(pct(n.latencies, 0.99)))
		base.add(b)
		noisy.add(n)
	}

	report := func(name string, r phaseResult) {
		t.Logf("%-9s others: %5d ok, %d failed, %6.1f req/s, p50 %6.2fms, p99 %6.2fms",
			name, r.ok, r.fail, float64(r.ok)/r.elapsed.Seconds(),
			ms(pct(r.latencies, 0.50)), ms(pct(r.latencies, 0.99)))
	}
	report("baseline", base)
	report("flood", noisy)
	sent := 0
	for _, n := range noisy.flood {
		sent += n
	}
	if *floodUnlimited {
		t.Logf("reference run: the flooder's plan has no limits")
	}
	t.Logf("flooder: %d requests at %d/s (limit %d/s): %d answered 429 (over its rate, or cut by its %v statement timeout), %d served (all: %v)",
		sent, flooderRate, flooderLimit, noisy.flood[http.StatusTooManyRequests], *flooderTimeout, noisy.flood[http.StatusNoContent], noisy.flood)
	if n := noisy.flood[http.StatusInternalServerError]; n > 0 {
		t.Errorf("flooder: %d requests answered 500; its limits must be answered 429", n)
	}
	t.Logf("flooder: most server connections at once %d (cap %d)", noisy.mostConns, *flooderCap)
	// The flooder is the only database-model tenant: its model's transactions are its own.
	for _, s := range p.Router.TxStats() {
		if s.Model == tenancy.ModelDatabase {
			t.Logf("flooder: %d transactions asked of the router (refused ones too), holding connections %.2f s in all (%.3f s per second of flood; budget %g)",
				s.Committed+s.Failed, s.Seconds, s.Seconds/noisy.elapsed.Seconds(), *flooderDBTime)
		}
	}
	ratio := float64(pct(noisy.latencies, 0.99)) / float64(pct(base.latencies, 0.99))
	t.Logf("others' p99 under the flood: %.2fx baseline (target <= 1.25x)", ratio)

	if avg, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("machine load average (1, 5, 15 min): %s", strings.Join(strings.Fields(string(avg))[:3], " "))
	}
	st := p.Router.Stats(flooder.Placement.Server)
	t.Logf("router: %d connections dialed, %d idle ones evicted for another database", st.Dials, st.Evictions)
	if *floodUnlimited {
		return // a reference run: nothing to hold it to
	}
	if noisy.mostConns > *flooderCap {
		t.Errorf("the flooder held %d connections at once, over its cap of %d", noisy.mostConns, *flooderCap)
	}
	if base.fail != 0 || noisy.fail != 0 {
		t.Errorf("the others had failures: %d in the baseline, %d under the flood", base.fail, noisy.fail)
	}
	if noisy.flood[http.StatusTooManyRequests] == 0 {
		t.Error("the flooder was never refused")
	}
}

// add merges r into p.
func (p *phaseResult) add(r phaseResult) {
	p.latencies = append(p.latencies, r.latencies...)
	p.ok += r.ok
	p.fail += r.fail
	p.elapsed += r.elapsed
	if p.flood == nil {
		p.flood = map[int]int{}
	}
	for k, v := range r.flood {
		p.flood[k] += v
	}
	p.mostConns = max(p.mostConns, r.mostConns)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// seedContacts gives tn n contacts.
func seedContacts(t *testing.T, p *platform.Platform, tn *tenancy.Tenant, n int) {
	t.Helper()
	err := p.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO contacts (tenant_id, name, email)
			SELECT $1, 'person ' || i, 'p' || i || '@example.test' FROM generate_series(1, $2::int) i`, tn.ID, n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
