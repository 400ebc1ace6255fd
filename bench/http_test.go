package bench

import (
	"context"
	"encoding/json"
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

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

var (
	httpRun      = flag.Bool("http", false, "run the end-to-end HTTP load (otherwise a smoke second)")
	httpDuration = flag.Duration("http.duration", 20*time.Second, "duration of the HTTP load")
	httpClients  = flag.Int("http.clients", 16, "concurrent HTTP clients")
)

// crmHandler serves the CRM's four calls for the tenant that httpx resolved,
// each one tenant transaction: the application a SaaS team would write on
// tenancy, reduced to its data access.
func crmHandler(p interface {
	Tx(ctx context.Context, fn func(pgx.Tx) error) error
}) http.Handler {
	mux := http.NewServeMux()
	tenantID := func(r *http.Request) string {
		t, _ := tenancy.TenantFromContext(r.Context())
		return t.ID.String()
	}
	reply := func(w http.ResponseWriter, r *http.Request, v any, err error) {
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /contacts/{id}", func(w http.ResponseWriter, r *http.Request) {
		var c struct{ Name, Email string }
		err := p.Tx(r.Context(), func(tx pgx.Tx) error {
			return tx.QueryRow(r.Context(), `SELECT name, email FROM contacts WHERE tenant_id = $1 AND id = $2`, tenantID(r), r.PathValue("id")).Scan(&c.Name, &c.Email)
		})
		reply(w, r, c, err)
	})
	mux.HandleFunc("GET /deals", func(w http.ResponseWriter, r *http.Request) {
		type deal struct {
			ID            int64
			Title, Amount string
		}
		var ds []deal
		err := p.Tx(r.Context(), func(tx pgx.Tx) error {
			rows, err := tx.Query(r.Context(), `SELECT id, title, amount::text FROM deals WHERE tenant_id = $1 AND stage = $2 ORDER BY id LIMIT 20`,
				tenantID(r), r.URL.Query().Get("stage"))
			if err != nil {
				return err
			}
			ds, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (d deal, err error) {
				err = row.Scan(&d.ID, &d.Title, &d.Amount)
				return d, err
			})
			return err
		})
		reply(w, r, ds, err)
	})
	mux.HandleFunc("POST /contacts", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Name, Email string }
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in); err != nil {
			httpx.WriteError(w, r, tenancy.Errorf(tenancy.CodeInvalid, "body: %v", err))
			return
		}
		var id int64
		err := p.Tx(r.Context(), func(tx pgx.Tx) error {
			return tx.QueryRow(r.Context(), `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, $2, $3) RETURNING id`, tenantID(r), in.Name, in.Email).Scan(&id)
		})
		reply(w, r, map[string]int64{"id": id}, err)
	})
	mux.HandleFunc("PATCH /deals/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := p.Tx(r.Context(), func(tx pgx.Tx) error {
			_, err := tx.Exec(r.Context(), `UPDATE deals SET amount = amount + 1 WHERE tenant_id = $1 AND id = $2`, tenantID(r), r.PathValue("id"))
			return err
		})
		reply(w, r, map[string]bool{"ok": true}, err)
	})
	return mux
}

// TestHTTP serves the CRM calls over real HTTP (loopback) through httpx and the
// router, and drives them with closed-loop clients: p50, p99 and throughput per
// model. A smoke second by default; -http for the real run.
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
	mw, err := httpx.Middleware(httpx.Config{Resolver: b.Platform.Cache})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw(crmHandler(b.Platform.Router)))
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
				req := crmRequest(srv.URL, d)
				req.Header.Set("X-Tenant", d.tn.Slug)
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
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
	fmt.Fprintf(&md, "%d closed-loop HTTP/1.1 clients (keep-alive) for %v on loopback, against httpx + the router in one process; requests: 40%% read a contact, 30%% list deals, 15%% insert a contact, 15%% update a deal, over 2 tenants per model; %d CPUs shared with PostgreSQL and the clients.\n\n",
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
		body := `{"Name":"someone","Email":"` + email() + `"}`
		req, _ = http.NewRequest(http.MethodPost, base+"/contacts", strings.NewReader(body))
	default:
		req, _ = http.NewRequest(http.MethodPatch, base+"/deals/"+strconv.FormatInt(pick(d.deals), 10), nil)
	}
	return req
}
