package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/controlapi"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/redistest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type result struct {
	out, err string
	code     int
}

func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	m := &Main{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
	err := m.Run(context.Background(), args)
	m.Close()
	code := 0
	if err != nil {
		code = exitCode(err)
		stderr.WriteString(err.Error())
	}
	return result{stdout.String(), stderr.String(), code}
}

// TestDemoEmbedded runs the main job as a newcomer does: no database URL, so
// an embedded PostgreSQL in a data directory, reused by a second run. Each run
// serves, and the curl lines it prints are run exactly as printed.
func TestDemoEmbedded(t *testing.T) {
	t.Parallel()
	// The cluster may run as the postgres user, which cannot enter t.TempDir().
	dir, err := os.MkdirTemp("/tmp", "tenancy-demo-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	env := map[string]string{"TENANCY_DATA_DIR": filepath.Join(dir, "pg")}
	for i := range 2 {
		runServing(t, env, func(out string) {
			// The first run's curl lines move acme to the schema model, add
			// a contact to every tenant, and one more to acme by a
			// background import.
			rows := []string{`acme\s+shared\s+free\s+active\s.*\s3\s`, `globex\s+schema\s+pro\s+active\s.*\s3\s`, `initech\s+database\s+enterprise\s+active\s.*\s3\s`}
			if i == 1 {
				rows = []string{`acme\s+schema\s+free\s+active\s.*\s5\s`, `globex\s+schema\s+pro\s+active\s.*\s4\s`, `initech\s+database\s+enterprise\s+active\s.*\s4\s`}
			}
			for _, want := range append(rows, `/admin/#token=`) {
				if !regexp.MustCompile(want).MatchString(out) {
					t.Errorf("run %d: output lacks %s:\n%s", i, want, out)
				}
			}
			runPrintedCurls(t, out)
			if i == 0 {
				waitForImport(t, out)
				waitForMove(t, out)
			}
		}, "demo", "--addr", "127.0.0.1:0")
	}
}

// waitForImport waits until the background import of the printed lines has
// added its contact to acme, so that the next run counts it.
func waitForImport(t *testing.T, out string) {
	t.Helper()
	_, rest, _ := strings.Cut(out, "serving on ")
	base, _, _ := strings.Cut(rest, " ")
	resp, err := http.Post(base+"/login", "application/json", strings.NewReader(`{"email":"`+demoEmail+`","password":"`+demoPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", base+"/t/acme/contacts?q=Ann+Lee", nil)
		req.Header.Set("Authorization", "Bearer "+s.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "Ann Lee") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background import has not added its contact after 20s: %s", b)
		}
	}
}

// waitForMove waits until the move of the printed lines has ended, and
// fails unless it succeeded.
func waitForMove(t *testing.T, out string) {
	t.Helper()
	_, rest, _ := strings.Cut(out, "serving on ")
	base, _, _ := strings.Cut(rest, " ")
	_, rest, _ = strings.Cut(out, "#token=")
	token, _, _ := strings.Cut(rest, "\n")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", base+"/control/v1/operations", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var list struct{ Items []controlapi.OpResource }
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("operations: %+v %v, want the move", list, err)
		}
		switch op := list.Items[0]; op.State {
		case controlapi.OpSucceeded:
			return
		case controlapi.OpFailed:
			t.Fatalf("the printed move failed: %+v", op.Error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the printed move has not ended after 30s")
		}
	}
}

// runServing runs a serving command until it prints "Press Ctrl-C" (or its
// URL line, for serve), calls check with its output, then stops it as Ctrl-C
// does and checks that it stops cleanly.
func runServing(t *testing.T, env map[string]string, check func(out string), args ...string) {
	t.Helper()
	var stdout, stderr tenanttest.SyncBuffer
	m := &Main{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	defer m.Close()
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(stdout.String(), "Press Ctrl-C") && !strings.Contains(stdout.String(), "is serving on") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("%v ended before serving: %v\n%s%s", args, err, &stdout, &stderr)
		case <-deadline:
			cancel()
			t.Fatalf("%v is not serving after 2 minutes:\n%s%s", args, &stdout, &stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if strings.Contains(stdout.String(), "Press Ctrl-C") || args[0] != "demo" {
		check(stdout.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%v after Ctrl-C: %v\n%s", args, err, &stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%v did not stop within 30s of Ctrl-C", args)
	}
}

// installation returns the environment of a fresh installation: a catalog
// and one server, pg1, in databases of the test server.
func installation(t *testing.T) map[string]string {
	t.Helper()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, ""))}
	if r := run(t, env, "servers", "add", "pg1", "--dsn", s.URL(s.NewDatabase(t, ""))); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	return env
}

// runPrintedCurls runs the lines after "Try:" with bash, as a user would
// paste them, and fails on the first that fails.
func runPrintedCurls(t *testing.T, out string) {
	t.Helper()
	_, try, ok := strings.Cut(out, "Try:\n")
	if !ok {
		t.Fatalf("no curl lines in:\n%s", out)
	}
	try, _, _ = strings.Cut(try, "\n\n")
	var script []string
	for _, l := range strings.Split(try, "\n") {
		script = append(script, strings.TrimSpace(l))
	}
	if len(script) < 4 {
		t.Fatalf("want a few curl lines, got %q", script)
	}
	// Each line's output ends with a marker, so that a failure names its line.
	var marked []string
	for i, l := range script {
		marked = append(marked, l, fmt.Sprintf("echo; echo 'line %d ok'", i+1))
	}
	b, err := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(marked, "\n")).CombinedOutput()
	if err != nil {
		t.Fatalf("the printed lines fail: %v\n%s\n--- output:\n%s", err, try, b)
	}
	if !strings.Contains(string(b), fmt.Sprintf("line %d ok", len(script))) || !strings.Contains(string(b), `"slug":"acme"`) ||
		strings.Count(string(b), `"name":"Marie Curie"`) < 3 || !strings.Contains(string(b), `"kind":"move","tenant":"acme"`) {
		t.Errorf("the printed lines did not all do their job:\n%s", b)
	}
}

func TestTenantsCommands(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, ""))}
	data := s.URL(s.NewDatabase(t, ""))

	if r := run(t, env, "servers", "add", "pg1", "--dsn", data); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	slug := pgtest.UniqueName("cli")
	r := run(t, env, "tenants", "create", slug, "--model", "shared", "--json")
	if r.code != 0 {
		t.Fatalf("tenants create: %d %s", r.code, r.err)
	}
	var created []tenancy.Tenant
	if err := json.Unmarshal([]byte(r.out), &created); err != nil || len(created) != 1 || created[0].Status != tenancy.StatusActive {
		t.Fatalf("tenants create --json: %v %s", err, r.out)
	}
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"HostileSlug", []string{"tenants", "create", `x"; DROP TABLE catalog.tenants; --`, "--model", "shared"}, 2},
		{"BadModel", []string{"tenants", "create", "okslug", "--model", "cluster"}, 2},
		{"Duplicate", []string{"tenants", "create", slug, "--model", "shared"}, 4},
		{"Unknown", []string{"tenants", "show", "nobody-here"}, 3},
		{"NoArgs", []string{"tenants", "create"}, 2},
		{"UnknownCommand", []string{"frobnicate"}, 2},
		{"BadServerName", []string{"servers", "add", "Bad Name", "--dsn", data}, 2},
		{"BadAppDSN", []string{"servers", "add", "pg9", "--dsn", data, "--app-dsn", "postgres://u@h:notaport/db"}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if r := run(t, env, c.args...); r.code != c.code {
				t.Errorf("exit %d, want %d: %s", r.code, c.code, r.err)
			}
		})
	}
	// Nothing was lost or added by the bad commands.
	r = run(t, env, "tenants", "list", "--json")
	var all []tenancy.Tenant
	if err := json.Unmarshal([]byte(r.out), &all); err != nil || len(all) != 1 || all[0].Slug != slug {
		t.Fatalf("after bad input the catalog holds %s (%v)", r.out, err)
	}
}

// TestServe runs "tenancy serve" on a catalog given by URL: it refuses to
// start without an operator token, and serves the dashboard, the control API
// (behind the token), health and metrics.
func TestServe(t *testing.T) {
	t.Parallel()
	env := installation(t)
	if r := run(t, env, "serve", "--addr", "127.0.0.1:0"); r.code != 2 || !strings.Contains(r.err, "tenancy operators add") {
		t.Fatalf("serve without a token or an operator: exit %d %s", r.code, r.err)
	}
	if r := run(t, env, "serve", "--addr", "127.0.0.1:0", "--operator-token", "short"); r.code != 2 || !strings.Contains(r.err, "16 characters") {
		t.Fatalf("serve with a short token: exit %d %s", r.code, r.err)
	}
	// With a named operator and no shared token, only the operator's token opens the control API.
	r := run(t, env, "operators", "add", "ops", "--json")
	var op struct{ Token string }
	if err := json.Unmarshal([]byte(r.out), &op); r.code != 0 || err != nil {
		t.Fatalf("operators add: %d %s %s", r.code, r.out, r.err)
	}
	runServing(t, env, func(out string) {
		_, rest, _ := strings.Cut(out, "serving on ")
		base, _, _ := strings.Cut(rest, " ")
		for tok, want := range map[string]int{op.Token: 200, "": 401, "op_" + strings.Repeat("x", 26): 401} {
			req, _ := http.NewRequest("GET", base+"/control/v1/tenants", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("serve with operators only, token %q: %d, want %d", tok, resp.StatusCode, want)
			}
		}
	}, "serve", "--addr", "127.0.0.1:0")
	env["TENANCY_OPERATOR_TOKEN"] = "serve-test-operator-token"
	// A stand-in OTLP collector: the server exports its traces there.
	var traces atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			traces.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.URL
	runServing(t, env, func(out string) {
		_, rest, _ := strings.Cut(out, "serving on ")
		base, _, _ := strings.Cut(rest, " ")
		get := func(path, tok string) (int, string) {
			req, _ := http.NewRequest("GET", base+path, nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		for _, c := range []struct {
			path, tok string
			status    int
			want      string
		}{
			{"/healthz", "", 200, "ok"},
			{"/readyz", "", 200, "ready"},
			{"/admin/", "", 200, "<title>tenancy"},
			{"/control/openapi.json", "", 200, `"openapi"`},
			{"/control/v1/tenants", "", 401, "operator token"},
			{"/control/v1/tenants", env["TENANCY_OPERATOR_TOKEN"], 200, `"items":[]`},
			{"/t/nobody-here/contacts", "", 404, "not_found"},
			{"/metrics", "", 200, "tenancy_http_requests_total{area=\"control\",code=\"4xx\"} 1"},
		} {
			if code, body := get(c.path, c.tok); code != c.status || !strings.Contains(body, c.want) {
				t.Errorf("GET %s: %d %s, want %d with %q", c.path, code, body, c.status, c.want)
			}
		}
	}, "serve", "--addr", "127.0.0.1:0")
	if traces.Load() == 0 {
		t.Error("serve exported no traces to OTEL_EXPORTER_OTLP_ENDPOINT")
	}
}

// TestDemoCatchesUp: a demo started again on tenants an older release of
// tenancy prepared (here: the schema tenant's record of the release changed)
// brings them up to date before serving, and says so.
func TestDemoCatchesUp(t *testing.T) {
	t.Parallel()
	s := pgtest.Restartable(t) // the demo's fixed slugs need a server of their own
	catalogDB, data := s.NewDatabase(t, ""), s.NewDatabase(t, "")
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(catalogDB)}
	if r := run(t, env, "servers", "add", "local", "--dsn", s.URL(data)); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	runServing(t, env, func(out string) {
		if strings.Contains(out, "up to date") {
			t.Errorf("first run: nothing to catch up, yet:\n%s", out)
		}
	}, "demo", "--addr", "127.0.0.1:0")

	conn, err := pgx.Connect(context.Background(), s.URL(data))
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `COMMENT ON TABLE tenant_globex.tenancy_migrations IS 'tenancy platform older'`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, env, "migrate", "status"); !strings.Contains(r.out, "stale") {
		t.Fatalf("migrate status does not report the stale target:\n%s%s", r.out, r.err)
	}
	runServing(t, env, func(out string) {
		if !strings.Contains(out, "Brought 1 of the demo's targets up to date") {
			t.Errorf("second run: want one target brought up to date:\n%s", out)
		}
	}, "demo", "--addr", "127.0.0.1:0")
	if r := run(t, env, "migrate", "status"); strings.Contains(r.out, "stale") || r.code != 0 {
		t.Errorf("after the demo, migrate status: %d\n%s%s", r.code, r.out, r.err)
	}
}

// TestServeWithRedis: serve keeps request budgets in Redis when given one,
// and says so in its metrics; bad Redis options exit 2 before anything
// starts.
func TestServeWithRedis(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, "")), "TENANCY_OPERATOR_TOKEN": "serve-test-operator-token"}
	for _, args := range [][]string{{"--redis", "http://nowhere"}, {"--redis-fail", "maybe"}, {"--max-conns", "0"}} {
		if r := run(t, env, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...); r.code != 2 {
			t.Errorf("serve %v: exit %d (%s), want 2", args, r.code, r.err)
		}
	}
	env["TENANCY_REDIS_URL"] = redistest.Start(t).URL()
	runServing(t, env, func(out string) {
		_, rest, _ := strings.Cut(out, "serving on ")
		base, _, _ := strings.Cut(rest, " ")
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "tenancy_ratelimit_redis_down 0") || !strings.Contains(string(b), `tenancy_ratelimit_redis_events_total{event="fallback"} 0`) {
			t.Errorf("metrics of a server with Redis:\n%s", b)
		}
	}, "serve", "--addr", "127.0.0.1:0", "--redis-fail", "closed")
}

// TestDemoSeedsATenantLeftUnseeded: a demo tenant that an interrupted first
// run created but did not seed is seeded by the next run, once.
func TestDemoSeedsATenantLeftUnseeded(t *testing.T) {
	t.Parallel()
	s := pgtest.Restartable(t) // the demo's fixed slugs need a server of their own
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, ""))}
	if r := run(t, env, "servers", "add", "local", "--dsn", s.URL(s.NewDatabase(t, ""))); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	if r := run(t, env, "tenants", "create", "acme", "--model", "shared", "--name", "Acme Corp"); r.code != 0 {
		t.Fatalf("tenants create: %d %s", r.code, r.err)
	}
	acme := regexp.MustCompile(`acme\s+shared\s+free\s+active\s.*\s3\s`)
	for i := range 2 {
		runServing(t, env, func(out string) {
			if !acme.MatchString(out) {
				t.Errorf("run %d: acme is not seeded once:\n%s", i+1, out)
			}
		}, "demo", "--addr", "127.0.0.1:0")
	}
}
