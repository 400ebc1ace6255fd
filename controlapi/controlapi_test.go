package controlapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/controlapi"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

const token = "operator-token-for-tests"

type testBundle struct {
	*tenanttest.Bundle
	srv *httptest.Server

	mu      sync.Mutex
	actions []controlapi.Action
}

func setup(t *testing.T, ops map[string]controlapi.Operation) *testBundle {
	t.Helper()
	b := &testBundle{Bundle: tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})}
	api, err := controlapi.New(controlapi.Config{
		Platform: b.Platform, Token: token, Operations: ops,
		Record: func(_ context.Context, a controlapi.Action) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.actions = append(b.actions, a)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	b.srv = httptest.NewServer(api)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *testBundle) do(t *testing.T, tok, method, path string, body any) (int, []byte, httpx.Problem) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, b.srv.URL+path, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var p httpx.Problem
	if resp.Header.Get("Content-Type") == httpx.ContentType {
		_ = json.Unmarshal(out, &p)
	}
	return resp.StatusCode, out, p
}

func (b *testBundle) last() controlapi.Action {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.actions[len(b.actions)-1]
}

func TestControlAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]controlapi.Operation{
		// The extension point: an operation the platform does not have.
		controlapi.OpMove: func(_ context.Context, tn *tenancy.Tenant, body json.RawMessage) (any, error) {
			return map[string]any{"moving": tn.Slug, "to": body}, nil
		},
	})
	shared := b.Tenants[0]
	err := b.Platform.Router.Tx(tenancy.WithActor(tenanttest.Ctx(shared), tenancy.Actor{Kind: "user", ID: "u1"}), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'Ada', 'ada@example.com')`, shared.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("OperatorToken", func(t *testing.T) {
		for _, tok := range []string{"", "wrong", token + "x", strings.ToUpper(token)} {
			code, _, p := b.do(t, tok, "GET", "/v1/tenants", nil)
			if code != 401 || p.Code != tenancy.CodeUnauthorized {
				t.Errorf("token %q: %d %+v", tok, code, p)
			}
			if a := b.last(); a.Outcome != "unauthorized" || a.Name != "tenant.list" || a.Actor != "" {
				t.Errorf("recorded %+v", a)
			}
		}
	})

	t.Run("ListWithUsage", func(t *testing.T) {
		code, body, _ := b.do(t, token, "GET", "/v1/tenants?usage=true", nil)
		var out struct{ Items []controlapi.TenantView }
		if err := json.Unmarshal(body, &out); code != 200 || err != nil || len(out.Items) != 3 {
			t.Fatalf("%d %v %s", code, err, body)
		}
		for _, tv := range out.Items {
			if tv.Usage == nil {
				t.Fatalf("%s has no usage", tv.Slug)
			}
			if tv.Slug == shared.Slug && (tv.Usage.Rows < 2 || tv.Usage.Bytes == 0) { // the contact, its audit entry, the chain head
				t.Errorf("usage of %s: %+v", tv.Slug, tv.Usage)
			}
		}
		if a := b.last(); a.Outcome != "ok" || a.Actor != "operator:token" {
			t.Errorf("recorded %+v", a)
		}
	})

	t.Run("Create", func(t *testing.T) {
		slug := pgtest.UniqueName("api")
		bad := []struct {
			body  any
			field string
		}{
			{map[string]string{"slug": "Bad Slug", "model": "shared"}, "slug"},
			{map[string]string{"slug": slug, "model": "cluster"}, "model"},
			{map[string]string{"slug": slug, "model": "shared", "colour": "blue"}, "colour"},
			{map[string]any{"slug": slug, "model": 1}, "model"},
			{map[string]string{"slug": slug, "model": "shared", "server": "No Such"}, "server"},
			{map[string]string{"slug": slug, "model": "shared", "server": "pg-nowhere"}, "server"},
		}
		for _, c := range bad {
			code, body, p := b.do(t, token, "POST", "/v1/tenants", c.body)
			if code != 400 || p.Field != c.field {
				t.Errorf("%v: %d %s, want 400 naming %s", c.body, code, body, c.field)
			}
		}
		code, body, _ := b.do(t, token, "POST", "/v1/tenants", map[string]string{"slug": slug, "model": "schema", "tier": "pro"})
		var tv controlapi.TenantView
		if err := json.Unmarshal(body, &tv); code != 201 || err != nil || tv.Status != tenancy.StatusActive || tv.Model != tenancy.ModelSchema {
			t.Fatalf("create: %d %s", code, body)
		}
		b.Track(tv.Tenant)
		if code, _, p := b.do(t, token, "POST", "/v1/tenants", map[string]string{"slug": slug, "model": "shared"}); code != 409 || p.Field != "slug" {
			t.Errorf("duplicate: %d %+v", code, p)
		}
		if a := b.last(); a.Name != "tenant.create" || a.Tenant != "" || a.Outcome != "conflict" {
			t.Errorf("recorded %+v", a)
		}
		ts, err := b.Platform.Catalog.Tenants(context.Background(), nil)
		if err != nil || len(ts) != 4 {
			t.Errorf("the catalog holds %d tenants, want the 3 and the one created (%v)", len(ts), err)
		}
		if code, _, _ := b.do(t, token, "GET", "/v1/tenants/"+slug, nil); code != 200 {
			t.Errorf("show: %d", code)
		}
		if code, _, _ := b.do(t, token, "GET", "/v1/tenants/nobody-here", nil); code != 404 {
			t.Errorf("show unknown: %d", code)
		}
	})

	t.Run("Audit", func(t *testing.T) {
		code, body, _ := b.do(t, token, "GET", "/v1/tenants/"+shared.Slug+"/audit?table=contacts", nil)
		var out struct {
			Items []struct{ Actor, Op string }
		}
		if err := json.Unmarshal(body, &out); code != 200 || err != nil || len(out.Items) != 1 || out.Items[0].Actor != "user:u1" {
			t.Fatalf("audit: %d %s", code, body)
		}
		code, body, _ = b.do(t, token, "GET", "/v1/tenants/"+shared.Slug+"/audit/verify", nil)
		if code != 200 || !strings.Contains(string(body), `"ok":true`) || !strings.Contains(string(body), `"head_checked":true`) {
			t.Errorf("verify: %d %s", code, body)
		}
		if code, _, p := b.do(t, token, "GET", "/v1/tenants/"+shared.Slug+"/audit?limit=x", nil); code != 400 || p.Field != "limit" {
			t.Errorf("bad limit: %d %+v", code, p)
		}
		// By row and time range.
		count := func(query string) int {
			t.Helper()
			code, body, _ := b.do(t, token, "GET", "/v1/tenants/"+shared.Slug+"/audit?"+query, nil)
			var out struct{ Items []json.RawMessage }
			if err := json.Unmarshal(body, &out); code != 200 || err != nil {
				t.Fatalf("audit?%s: %d %s", query, code, body)
			}
			return len(out.Items)
		}
		for query, want := range map[string]int{
			"table=contacts&row=" + url.QueryEscape(`{"id": 1}`):                   1,
			"table=contacts&row=" + url.QueryEscape(`{"id": 2}`):                   0,
			"since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z&table=contacts": 1,
			"until=2000-01-01T00:00:00Z":                                           0,
		} {
			if got := count(query); got != want {
				t.Errorf("audit?%s: %d entries, want %d", query, got, want)
			}
		}
		for query, field := range map[string]string{"row=7": "row", "row=%7B%7D": "row", "since=yesterday": "since", "until=2026": "until"} {
			if code, _, p := b.do(t, token, "GET", "/v1/tenants/"+shared.Slug+"/audit?"+query, nil); code != 400 || p.Field != field {
				t.Errorf("audit?%s: %d %+v, want 400 naming %s", query, code, p, field)
			}
		}
	})

	t.Run("ServersHideTheirDSN", func(t *testing.T) {
		code, body, _ := b.do(t, token, "GET", "/v1/servers", nil)
		if code != 200 || !strings.Contains(string(body), `"name":"pg1"`) || strings.Contains(string(body), "postgres://") {
			t.Errorf("servers: %d %s", code, body)
		}
	})

	t.Run("Plans", func(t *testing.T) {
		code, body, _ := b.do(t, token, "GET", "/v1/plans", nil)
		if code != 200 || !strings.Contains(string(body), `"tier":"free"`) || !strings.Contains(string(body), `"rps":10`) {
			t.Errorf("plans: %d %s", code, body)
		}
	})

	t.Run("Migrations", func(t *testing.T) {
		code, body, _ := b.do(t, token, "GET", "/v1/migrations", nil)
		var out struct {
			Latest  int
			Targets []struct{ Summary string }
		}
		if err := json.Unmarshal(body, &out); code != 200 || err != nil || out.Latest != b.Platform.Model.Latest() || len(out.Targets) < 3 {
			t.Fatalf("migrations: %d %s", code, body)
		}
		for _, tg := range out.Targets {
			if tg.Summary != "current" {
				t.Errorf("target %s", body)
			}
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		tn := b.Tenants[1]
		post := func(verb string, body any) (int, []byte, httpx.Problem) {
			return b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/"+verb, body)
		}
		wantStatus := func(verb string, body any, want tenancy.Status) {
			t.Helper()
			code, out, _ := post(verb, body)
			var got tenancy.Tenant
			if err := json.Unmarshal(out, &got); code != 200 || err != nil || got.Status != want {
				t.Fatalf("%s: %d %s, want status %s", verb, code, out, want)
			}
		}
		wantStatus("suspend", nil, tenancy.StatusSuspended)
		if code, _, p := post("suspend", nil); code != 409 {
			t.Errorf("suspend twice: %d %+v", code, p)
		}
		wantStatus("resume", nil, tenancy.StatusActive)
		code, out, _ := post("change-tier", map[string]string{"tier": "pro"})
		if code != 200 || !strings.Contains(string(out), `"tier":"pro"`) {
			t.Errorf("change tier: %d %s", code, out)
		}
		if code, _, p := post("change-tier", map[string]string{"tier": "Not A Tier"}); code != 400 || p.Field != "tier" {
			t.Errorf("bad tier: %d %+v", code, p)
		}
		wantStatus("delete", nil, tenancy.StatusDeleted)
		if code, _, p := post("purge", map[string]string{"confirm": "someone-else"}); code != 400 || p.Field != "confirm" {
			t.Errorf("purge without the right confirmation: %d %+v", code, p)
		}
		wantStatus("restore", nil, tenancy.StatusActive)
		if code, out, _ := post("move", map[string]string{"model": "database"}); code != 200 || !strings.Contains(string(out), `"moving"`) {
			t.Errorf("configured move: %d %s", code, out)
		}
		if a := b.last(); a.Name != "tenant.move" || a.Tenant != tn.Slug || a.Outcome != "ok" {
			t.Errorf("recorded %+v", a)
		}

		// Each change is in the control-plane log, by the operator.
		code, out, _ = b.do(t, token, "GET", "/v1/events?tenant="+tn.Slug, nil)
		var ev struct {
			Items []struct{ Kind, Operator string }
		}
		if err := json.Unmarshal(out, &ev); code != 200 || err != nil {
			t.Fatalf("events: %d %s", code, out)
		}
		var kinds []string
		for _, e := range ev.Items {
			kinds = append(kinds, e.Kind)
			if e.Kind != "tenant_created" && e.Operator != "operator:token" {
				t.Errorf("event %s by %q", e.Kind, e.Operator)
			}
		}
		if got := strings.Join(kinds, " "); !strings.Contains(got, "suspended resumed tier_changed deleted restored") {
			t.Errorf("events of %s: %s", tn.Slug, got)
		}
		if code, out, _ := b.do(t, token, "GET", "/v1/events/verify", nil); code != 200 || !strings.Contains(string(out), `"ok":true`) {
			t.Errorf("verify events: %d %s", code, out)
		}
	})
}

// TestOpenAPI checks that the document parses and that every path it
// documents is routed.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(controlapi.OpenAPI(), &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.json: %v %q", err, doc.OpenAPI)
	}
	if len(doc.Paths) < 14 {
		t.Errorf("the document has %d paths", len(doc.Paths))
	}
	b := setup(t, nil)
	for path, ops := range doc.Paths {
		for method := range ops {
			p := strings.ReplaceAll(path, "{slug}", b.Tenants[0].Slug)
			code, body, prob := b.do(t, token, strings.ToUpper(method), p, nil)
			if code == 404 && strings.HasPrefix(prob.Detail, "no route") || code == 405 {
				t.Errorf("%s %s is documented but not routed: %d %s", method, path, code, body)
			}
		}
	}
}

// TestControlAPIMove moves a tenant through the control API, with the
// platform's own operation: 202 and an operation to poll until it is done.
func TestControlAPIMove(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tn := b.Tenants[0] // shared
	post := func(slug string, body any) (int, []byte, httpx.Problem) {
		return b.do(t, token, "POST", "/v1/tenants/"+slug+"/move", body)
	}
	before, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		body  any
		field string
	}{
		{map[string]string{"model": "cluster"}, "model"},
		{map[string]string{"model": "schema", "server": "pg-nowhere"}, "server"},
		{map[string]string{"model": "schema", "server": "Bad Name"}, "server"},
		{map[string]string{"model": "shared"}, "model"}, // where it is already
		{map[string]any{"model": 1}, "model"},
		{map[string]any{"model": "schema", "colour": "blue"}, "colour"},
	} {
		if code, out, p := post(tn.Slug, c.body); code != 400 || p.Field != c.field {
			t.Errorf("%v: %d %s, want 400 naming %s", c.body, code, out, c.field)
		}
	}
	if code, _, _ := post("no-such-tenant", map[string]string{"model": "schema"}); code != 404 {
		t.Errorf("unknown tenant: %d, want 404", code)
	}
	if code, _, _ := b.do(t, token, "GET", "/v1/operations/op-unknown", nil); code != 404 {
		t.Errorf("unknown operation: %d, want 404", code)
	}
	if after, err := b.Platform.Catalog.Tenant(ctx, tn.ID); err != nil || after.Version != before.Version || after.Model != before.Model {
		t.Fatalf("refused moves changed the tenant: %+v %v", after, err)
	}

	req, _ := http.NewRequest("POST", b.srv.URL+"/v1/tenants/"+tn.Slug+"/move", strings.NewReader(`{"model":"schema"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	code := resp.StatusCode
	var op controlapi.OpResource
	if err := json.Unmarshal(out, &op); code != 202 || err != nil || op.State != controlapi.OpRunning || op.Tenant != tn.Slug {
		t.Fatalf("move: %d %s", code, out)
	}
	// Location is relative to the request, wherever the API is mounted.
	if loc, err := resp.Location(); err != nil || loc.Path != "/v1/operations/"+op.ID {
		t.Errorf("Location %q resolves to %v (%v), want the operation", resp.Header.Get("Location"), loc, err)
	}
	if a := b.last(); a.Name != "tenant.move" || a.Tenant != tn.Slug || a.Outcome != "ok" {
		t.Errorf("recorded %+v", a)
	}
	op, out = b.await(t, op)
	if op.State != controlapi.OpSucceeded || op.FinishedAt.IsZero() || op.Step != "done" ||
		!strings.Contains(string(out), `"to_model":"schema"`) {
		t.Fatalf("operation: %s", out)
	}
	now, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
	if err != nil || now.Model != tenancy.ModelSchema {
		t.Errorf("after the move: %v %v", now, err)
	}
	if code, out, _ := b.do(t, token, "GET", "/v1/operations", nil); code != 200 || !strings.Contains(string(out), op.ID) {
		t.Errorf("list: %d %s", code, out)
	}
}

// TestControlAPIMoveResumes: a move left unfinished (as a process that died
// right after starting it leaves it: the tenant moving, the move started) is
// rolled back when a move is posted again, which then runs.
func TestControlAPIMoveResumes(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tn := b.Tenants[0] // shared
	pool := b.Platform.Catalog.Pool()
	if _, err := pool.Exec(ctx, `WITH m AS (UPDATE catalog.tenants SET status = 'moving' WHERE id = $1 RETURNING *)
		INSERT INTO catalog.moves (tenant_id, state, src_model, src_server, src_database, src_schema,
			dst_model, dst_server, dst_database, dst_schema)
		SELECT id, 'started', model, server, database, schema, 'schema', server, database, 'tenant_' || slug FROM m`, tn.ID); err != nil {
		t.Fatal(err)
	}
	code, out, _ := b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/move", map[string]string{"model": "schema"})
	var op controlapi.OpResource
	if err := json.Unmarshal(out, &op); code != 202 || err != nil {
		t.Fatalf("move of a tenant with an unfinished move: %d %s", code, out)
	}
	op, out = b.await(t, op)
	if op.State != controlapi.OpSucceeded {
		t.Fatalf("operation: %s", out)
	}
	var states string
	if err := pool.QueryRow(ctx, `SELECT string_agg(state, ' ' ORDER BY id) FROM catalog.moves WHERE tenant_id = $1`, tn.ID).Scan(&states); err != nil || states != "rolled_back done" {
		t.Errorf("moves of the tenant: %q %v, want the unfinished one rolled back, the new one done", states, err)
	}
	if now, err := b.Platform.Catalog.Tenant(ctx, tn.ID); err != nil || now.Model != tenancy.ModelSchema || now.Status != tenancy.StatusActive {
		t.Errorf("after the move: %+v %v", now, err)
	}
}

// await polls the operation until it is no longer running (at most 30 s) and
// returns it, with the body of the last poll.
func (b *testBundle) await(t *testing.T, op controlapi.OpResource) (controlapi.OpResource, []byte) {
	t.Helper()
	var out []byte
	for deadline := time.Now().Add(30 * time.Second); op.State == controlapi.OpRunning && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		var code int
		code, out, _ = b.do(t, token, "GET", "/v1/operations/"+op.ID, nil)
		if code != 200 {
			t.Fatalf("poll: %d %s", code, out)
		}
		op = controlapi.OpResource{}
		if err := json.Unmarshal(out, &op); err != nil {
			t.Fatal(err)
		}
	}
	return op, out
}

// TestControlAPIPurge: a purge is checked before it is answered — refused at
// once, changing nothing, without the confirmation, for a tenant not deleted
// or still retained — and then runs in the background, an operation to poll
// whose result is the tenant's tombstone.
func TestControlAPIPurge(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tn := b.Tenants[2] // database
	if tn.Model != tenancy.ModelDatabase {
		t.Fatalf("tenant %s is %s", tn.Slug, tn.Model)
	}
	post := func(body any) (int, []byte, httpx.Problem) {
		return b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/purge", body)
	}
	confirm := map[string]string{"confirm": tn.Slug}
	refused := func(what string, body any, code int, field, says string) {
		t.Helper()
		before, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, out, p := post(body)
		if got != code || p.Field != field || !strings.Contains(p.Detail, says) {
			t.Errorf("%s: %d %s, want %d naming %q and saying %q", what, got, out, code, field, says)
		}
		if after, err := b.Platform.Catalog.Tenant(ctx, tn.ID); err != nil || after.Version != before.Version || after.Status != before.Status {
			t.Errorf("%s changed the tenant: %+v %v", what, after, err)
		}
	}
	refused("an active tenant", confirm, 409, "", "delete it first")
	if code, out, _ := b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/delete", nil); code != 200 {
		t.Fatalf("delete: %d %s", code, out)
	}
	refused("no confirmation", nil, 400, "confirm", "confirm with its slug")
	refused("another slug as confirmation", map[string]string{"confirm": b.Tenants[0].Slug}, 400, "confirm", "confirm with its slug")
	refused("a retained tenant", confirm, 409, "", "retained for")
	if _, err := b.Platform.Catalog.Pool().Exec(ctx, `UPDATE catalog.tenants SET deleted_at = deleted_at - interval '31 days' WHERE id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}

	code, out, _ := post(confirm)
	var op controlapi.OpResource
	if err := json.Unmarshal(out, &op); code != 202 || err != nil || op.Kind != controlapi.OpPurge || op.Tenant != tn.Slug {
		t.Fatalf("purge: %d %s", code, out)
	}
	op, out = b.await(t, op)
	if op.State != controlapi.OpSucceeded || op.Step != "done" || !strings.Contains(string(out), `"status":"purged"`) {
		t.Fatalf("operation: %s", out)
	}
	if now, err := b.Platform.Catalog.Tenant(ctx, tn.ID); err != nil || now.Status != tenancy.StatusPurged {
		t.Errorf("after the purge: %+v %v", now, err)
	}
	var exists bool
	if err := b.Platform.Catalog.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tn.Placement.Database).Scan(&exists); err != nil || exists {
		t.Errorf("the tenant's database is still there (%v)", err)
	}
	refused("a purged tenant", confirm, 409, "", "already purged")
}

// TestNamedOperators: a named operator's token opens the API, and its actions
// and changes are recorded under its name; once revoked it is refused at
// once; GET /v1/operators lists operators without their tokens.
func TestNamedOperators(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tn := b.Tenants[0]
	_, alice, err := b.Platform.Catalog.AddOperator(ctx, "alice", catalog.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ := b.do(t, alice, "POST", "/v1/tenants/"+tn.Slug+"/suspend", nil); code != 200 {
		t.Fatalf("suspend as alice: %d %s", code, out)
	}
	if a := b.last(); a.Actor != "operator:alice" || a.Outcome != "ok" {
		t.Errorf("recorded %+v", a)
	}
	events, _, err := b.Platform.Catalog.Events(ctx, &catalog.EventOpts{TenantID: tn.ID, Kind: catalog.EventSuspended})
	if err != nil || len(events) != 1 || events[0].Operator != "operator:alice" {
		t.Errorf("the suspension in the control-plane log: %+v %v", events, err)
	}

	code, out, _ := b.do(t, token, "GET", "/v1/operators", nil)
	if code != 200 || !strings.Contains(string(out), `"name":"alice"`) || strings.Contains(string(out), alice[len(alice)-26:]) || strings.Contains(string(out), "hash") {
		t.Errorf("list operators: %d %s", code, out)
	}

	// A viewer reads and changes nothing.
	_, viewer, err := b.Platform.Catalog.AddOperator(ctx, "carol", catalog.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ := b.do(t, viewer, "GET", "/v1/tenants/"+tn.Slug, nil); code != 200 {
		t.Errorf("a viewer reads a tenant: %d %s", code, out)
	}
	before, _ := b.Platform.Catalog.Tenant(ctx, tn.ID)
	if code, _, p := b.do(t, viewer, "POST", "/v1/tenants/"+tn.Slug+"/resume", nil); code != 403 || p.Code != tenancy.CodeForbidden {
		t.Errorf("a viewer resumes a tenant: %d %+v, want 403", code, p)
	}
	if a := b.last(); a.Actor != "operator:carol" || a.Outcome != "forbidden" {
		t.Errorf("recorded %+v", a)
	}
	if after, _ := b.Platform.Catalog.Tenant(ctx, tn.ID); after.Version != before.Version {
		t.Errorf("a viewer's refused change changed the tenant")
	}

	if _, err := b.Platform.Catalog.RevokeOperator(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{alice, "opk_nobody_x", "opk_"} {
		if code, _, p := b.do(t, tok, "GET", "/v1/tenants", nil); code != 401 || p.Code != tenancy.CodeUnauthorized {
			t.Errorf("token %q: %d %+v, want 401", tok, code, p)
		}
		if a := b.last(); a.Actor != "" || a.Outcome != "unauthorized" {
			t.Errorf("recorded %+v", a)
		}
	}
}

// TestOperationsAcrossNodes: an operation started on one node is answered
// by another, while it runs and after it ended, also once the node that ran
// it is gone; one whose node stopped saving it shows failed, saying it was
// interrupted.
func TestOperationsAcrossNodes(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	other := func() *testBundle {
		api, err := controlapi.New(controlapi.Config{Platform: b.Platform, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		o := &testBundle{Bundle: b.Bundle, srv: httptest.NewServer(api)}
		t.Cleanup(o.srv.Close)
		t.Cleanup(func() { _ = api.Close(context.Background()) })
		return o
	}
	second := other()
	tn := b.Tenants[0] // shared
	code, out, _ := b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/move", map[string]string{"model": "schema"})
	var op controlapi.OpResource
	if err := json.Unmarshal(out, &op); code != 202 || err != nil {
		t.Fatalf("move: %d %s", code, out)
	}
	// Polled on the second node, which never ran it.
	op, out = second.await(t, op)
	if op.State != controlapi.OpSucceeded || op.Step != "done" || !strings.Contains(string(out), `"to_model":"schema"`) {
		t.Fatalf("the move, seen from another node: %s", out)
	}
	// A node started afterwards lists it and shows it.
	third := other()
	if code, out, _ := third.do(t, token, "GET", "/v1/operations", nil); code != 200 || !strings.Contains(string(out), op.ID) {
		t.Errorf("list on a new node: %d %s", code, out)
	}
	if code, out, _ := third.do(t, token, "GET", "/v1/operations/"+op.ID, nil); code != 200 || !strings.Contains(string(out), `"state":"succeeded"`) {
		t.Errorf("show on a new node: %d %s", code, out)
	}

	// An operation saved as running by a process that then stopped saving it.
	lost := &catalog.APIOperation{ID: "op-lost", Node: "gone/1/x", Running: true,
		Doc: json.RawMessage(`{"id":"op-lost","kind":"move","tenant":"` + tn.Slug + `","state":"running","step":"copied","rows":0}`)}
	if err := b.Platform.Catalog.SaveAPIOperation(ctx, lost); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := third.do(t, token, "GET", "/v1/operations/op-lost", nil); code != 200 || !strings.Contains(string(out), `"state":"running"`) {
		t.Errorf("a running operation saved just now: %d %s", code, out)
	}
	if _, err := b.Platform.Catalog.Pool().Exec(ctx, `UPDATE catalog.api_operations SET heartbeat_at = now() - interval '1 minute' WHERE id = 'op-lost'`); err != nil {
		t.Fatal(err)
	}
	code, out, _ = third.do(t, token, "GET", "/v1/operations/op-lost", nil)
	var got controlapi.OpResource
	if err := json.Unmarshal(out, &got); code != 200 || err != nil || got.State != controlapi.OpFailed || got.Error == nil ||
		got.Error.Code != tenancy.CodeUnavailable || !strings.Contains(got.Error.Detail, "interrupted") {
		t.Errorf("an operation whose process is gone: %d %s", code, out)
	}
	if code, _, _ := third.do(t, token, "GET", "/v1/operations/op-nothing", nil); code != 404 {
		t.Errorf("an unknown operation: %d, want 404", code)
	}
}

// TestNoSharedToken: without a shared token only named operators' tokens
// open the API (an empty bearer matches nothing); a short one is refused.
func TestNoSharedToken(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	if _, err := controlapi.New(controlapi.Config{Platform: b.Platform, Token: "short"}); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
		t.Errorf("a short shared token: %v, want invalid", err)
	}
	api, err := controlapi.New(controlapi.Config{Platform: b.Platform})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close(context.Background()) })
	o := &testBundle{Bundle: b.Bundle, srv: httptest.NewServer(api)}
	t.Cleanup(o.srv.Close)
	_, alice, err := b.Platform.Catalog.AddOperator(context.Background(), "alice", catalog.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]int{"": 401, " ": 401, token: 401, alice: 200} {
		if code, out, _ := o.do(t, tok, "GET", "/v1/tenants", nil); code != want {
			t.Errorf("token %q: %d %s, want %d", tok, code, out, want)
		}
	}
}

// TestControlAPIMoveByTier: a move by tier sets the tier and moves the tenant
// to the tier's model in the background; posted again, the tenant is there
// already and only the tier is set; bad input names its field.
func TestControlAPIMoveByTier(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	tn := b.Tenants[0] // shared, free
	post := func(body any) controlapi.OpResource {
		t.Helper()
		code, out, _ := b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/move", body)
		var op controlapi.OpResource
		if err := json.Unmarshal(out, &op); code != 202 || err != nil {
			t.Fatalf("move %v: %d %s", body, code, out)
		}
		op, out = b.await(t, op)
		if op.State != controlapi.OpSucceeded || op.Step != "done" {
			t.Fatalf("move %v: %s", body, out)
		}
		return op
	}
	post(map[string]string{"tier": "pro"})
	now, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
	if err != nil || now.Tier != "pro" || now.Model != tenancy.ModelSchema {
		t.Fatalf("after a move to the pro tier: %+v %v", now, err)
	}
	post(map[string]string{"tier": "pro"}) // there already: nothing moves
	if again, err := b.Platform.Catalog.Tenant(ctx, tn.ID); err != nil || again.Placement != now.Placement {
		t.Errorf("posted again, the tenant moved: %+v %v", again, err)
	}
	for _, c := range []struct {
		body  any
		field string
	}{
		{map[string]string{"tier": "Not A Tier"}, "tier"},
		{map[string]string{"tier": "pro", "model": "schema"}, "model"},
		{map[string]string{"tier": "pro", "server": "pg9"}, "server"},
	} {
		if code, out, p := b.do(t, token, "POST", "/v1/tenants/"+tn.Slug+"/move", c.body); code != 400 || p.Field != c.field {
			t.Errorf("%v: %d %s, want 400 naming %s", c.body, code, out, c.field)
		}
	}
}
