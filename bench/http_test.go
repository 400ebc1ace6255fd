package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

var (
	httpRun      = flag.Bool("http", false, "run the end-to-end HTTP load (otherwise a smoke second)")
	httpDuration = flag.Duration("http.duration", 20*time.Second, "duration of the HTTP load")
	httpClients  = flag.Int("http.clients", 16, "concurrent HTTP clients")
)

// TestHTTP drives the example CRM application (examples/crm, the handler
// `tenancy demo` serves) over real HTTP on loopback with closed-loop clients:
// every request goes through tenant resolution, the API key check, the
// handler's validation and the router, as a customer's would. p50, p99 and
// throughput per model. A smoke second by default; -http for the real run.
func TestHTTP(t *testing.T) {
	if !*httpRun {
		t.Parallel() // the smoke rounds run side by side; measurements one at a time
	}
	duration, clients := time.Second, 2
	if *httpRun {
		duration, clients = *httpDuration, *httpClients
	}
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 2, MaxConnsPerServer: 20})
	var data []*tenantData
	for _, tn := range b.Tenants {
		data = append(data, seed(t, b, tn))
	}
	app, err := crm.New(context.Background(), b.Platform, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, d := range data {
		_, secret, err := app.Accounts().CreateAPIKey(context.Background(), d.tn.ID, "bench", accounts.RoleMember, uuid.Nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[d.tn.Slug] = "Bearer " + secret
	}
	srv := httptest.NewServer(app)
	defer srv.Close()
	transport := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}

	type sample struct {
		model tenancy.Model
		d     time.Duration
	}
	var mu sync.Mutex
	var samples []sample
	var failures []string
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var local []sample
			for ctx.Err() == nil {
				d := data[rand.IntN(len(data))]
				req := crmRequest(srv.URL+"/t/"+d.tn.Slug, d)
				req.Header.Set("Authorization", keys[d.tn.Slug])
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
					}
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				local = append(local, sample{d.tn.Model, time.Since(start)})
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed; first: %s", len(failures), failures[0])
	}

	var md strings.Builder
	fmt.Fprintf(&md, "%d closed-loop HTTP/1.1 clients (keep-alive) for %v on loopback, against the example CRM application in the same process (tenant from the path, an API key per tenant, the CRM's handlers and validation, the router); requests: 40%% read a contact, 30%% list deals, 15%% insert a contact, 15%% update a deal, over 2 tenants per model; %d CPUs shared with PostgreSQL and the clients.\n\n",
		clients, duration, runtime.NumCPU())
	md.WriteString("| model | requests | throughput | p50 | p99 |\n|---|---:|---:|---:|---:|\n")
	for _, m := range tenancy.Models {
		var ds []time.Duration
		for _, s := range samples {
			if s.model == m {
				ds = append(ds, s.d)
			}
		}
		if len(ds) == 0 {
			t.Fatalf("no %s request completed", m)
		}
		slices.Sort(ds)
		fmt.Fprintf(&md, "| %s | %d | %.0f req/s | %.2f ms | %.2f ms |\n", m, len(ds), float64(len(ds))/duration.Seconds(),
			float64(ds[len(ds)/2])/1e6, float64(ds[len(ds)*99/100])/1e6)
	}
	t.Log("\n" + md.String())
	if *httpRun && *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(*out, "http.md"), []byte(md.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// crmRequest returns one request of the mix for d's data.
func crmRequest(base string, d *tenantData) *http.Request {
	var req *http.Request
	switch x := rand.IntN(100); {
	case x < 40:
		req, _ = http.NewRequest(http.MethodGet, base+"/contacts/"+strconv.FormatInt(pick(d.contacts), 10), nil)
	case x < 70:
		req, _ = http.NewRequest(http.MethodGet, base+"/deals?stage="+stages[rand.IntN(len(stages))], nil)
	case x < 85:
		body := `{"name":"someone","email":"` + email() + `"}`
		req, _ = http.NewRequest(http.MethodPost, base+"/contacts", strings.NewReader(body))
	default:
		body := `{"amount":"` + strconv.Itoa(rand.IntN(100000)) + `.50"}`
		req, _ = http.NewRequest(http.MethodPatch, base+"/deals/"+strconv.FormatInt(pick(d.deals), 10), strings.NewReader(body))
	}
	if req.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}
