package serve_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/serve"
)

const token = "serve-test-operator-token"

// TestServer serves a stand-in application beside the control API: the
// tenant's requests and 429s show in its usage, never in the metrics, and
// the server stops cleanly when its context ends.
func TestServer(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	tn := b.CreateTenant(t, tenancy.ModelShared, b.ServerNames[0])
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("limited") {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/t/"+tn.Slug+"/") {
			_, _ = io.WriteString(w, "ok")
			return
		}
		http.NotFound(w, r)
	})
	s, err := serve.New(serve.Config{Platform: b.Platform, App: app, OperatorToken: token})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, p := range []string{"/x", "/y", "/x?limited"} {
		get("/t/" + tn.Slug + p)
	}
	get("/t/nobody-here/x") // 404: not counted
	code, body := get("/control/v1/tenants/" + tn.Slug + "/usage")
	if code != 200 || !strings.Contains(body, `"requests":3`) || !strings.Contains(body, `"rate_limited":1`) {
		t.Errorf("usage: %d %s", code, body)
	}
	if err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `SELECT count(*) FROM contacts WHERE tenant_id = $1`, tn.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	code, body = get("/metrics")
	for _, want := range []string{
		`tenancy_http_requests_total{area="app",code="4xx"} 2`,
		`tenancy_tenants{model="shared",tier="free",status="active"} 1`,
		`tenancy_http_rate_limited_total{tier="free",model="shared"} 1`,
		`tenancy_router_transactions_total{server="` + tn.Placement.Server + `",model="shared",outcome="committed"} 1`,
		`tenancy_moves_in_progress 0`,
		`tenancy_migrations_in_progress 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %s: %d\n%s", want, code, body)
		}
	}
	if strings.Contains(body, tn.Slug) || strings.Contains(body, tn.ID.String()) {
		t.Errorf("the metrics name a tenant:\n%s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not stop")
	}
}
