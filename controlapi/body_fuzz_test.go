package controlapi_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/controlapi"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// hostileValues are JSON values every body fuzz target starts from: wrong
// types, nulls, huge numbers, unicode, SQL and path injections, very long
// strings and values that end in garbage.
var hostileValues = []string{
	`null`, `1`, `"a\u0000b"`, `"a\"; DROP SCHEMA x; --"`, `-1`, `1e309`, `12345678901234567890123`, `true`, `[]`, `{}`, `[""]`, `{"a":1}`,
	`""`, `" "`, `"\u0000"`, `"\ud800"`, `"é"`, `"\u212a"`, `"ACME"`, `"a-"`, `"a--b"`,
	`"'; DROP TABLE catalog.tenants; --"`, `"../../etc/passwd"`, `"%00"`,
	`"tenant_x"`, `"pg_catalog"`, `"public"`, `"postgres"`, `"\\"`, `"a b"`, `"\n"`,
	`"` + strings.Repeat("a", 63) + `"`, `"` + strings.Repeat("a", 64) + `"`, `"` + strings.Repeat("é", 5000) + `"`,
	`"x" , "y"`, `"x"}`, `"x`, ``,
}

// checkProblem fails unless a 4xx or 5xx answer is one problem+json document
// whose code agrees with the status; it returns the problem.
func checkProblem(t *testing.T, resp *http.Response, body []byte, what string) httpx.Problem {
	t.Helper()
	var p httpx.Problem
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%s: %d %s", what, resp.StatusCode, body)
	}
	if resp.StatusCode < 400 {
		return p
	}
	if ct := resp.Header.Get("Content-Type"); ct != httpx.ContentType {
		t.Fatalf("%s: %d with Content-Type %q", what, resp.StatusCode, ct)
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Status != resp.StatusCode || httpx.StatusCode(p.Code) != resp.StatusCode {
		t.Fatalf("%s: %d problem %s (%v)", what, resp.StatusCode, body, err)
	}
	return p
}

// fuzzAPI is the control API on a platform of its own, for one fuzz target.
type fuzzAPI struct {
	*tenanttest.Bundle
	srv *httptest.Server
	// digest is one query that digests every catalog table; servers are
	// connections to each server's shared database.
	digest  string
	servers []*pgx.Conn
}

func newFuzzAPI(f *testing.F) *fuzzAPI {
	ctx := context.Background()
	b := &fuzzAPI{Bundle: tenanttest.Setup(f, &tenanttest.Opts{})}
	api, err := controlapi.New(controlapi.Config{Platform: b.Platform, Token: token})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = api.Close(context.Background()) })
	b.srv = httptest.NewServer(api)
	f.Cleanup(b.srv.Close)

	rows, err := b.Platform.Catalog.Pool().Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'catalog' ORDER BY 1`)
	if err != nil {
		f.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.Fatal(err)
	}
	var parts []string
	for _, tb := range tables {
		// The names come from pg_tables, quoted by format('%I').
		parts = append(parts, `(SELECT '`+strings.ReplaceAll(tb, "'", "''")+`=' || count(*) || ':' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM `+tb+` x)`)
	}
	b.digest = `SELECT concat_ws(E'\n', ` + strings.Join(parts, ", ") + `)`
	for _, name := range b.ServerNames {
		s, err := b.Platform.Catalog.Server(ctx, name)
		if err != nil {
			f.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { conn.Close(context.Background()) })
		b.servers = append(b.servers, conn)
	}
	return b
}

func (b *fuzzAPI) post(t *testing.T, path, body string) (*http.Response, []byte) {
	t.Helper()
	return b.send(t, http.MethodPost, path, body)
}

// send sends a request with the operator token and returns the answer.
func (b *fuzzAPI) send(t *testing.T, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

// state is a digest of what a control request could change: every row of
// every catalog table, and the schemas of each server's shared database.
func (b *fuzzAPI) state(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	var sb strings.Builder
	var catalog string
	if err := b.Platform.Catalog.Pool().QueryRow(ctx, b.digest).Scan(&catalog); err != nil {
		t.Fatal(err)
	}
	sb.WriteString(catalog)
	for i, conn := range b.servers {
		var schemas string
		if err := conn.QueryRow(ctx, `SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace`).Scan(&schemas); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "\n%s schemas=%s", b.ServerNames[i], schemas)
	}
	return sb.String()
}

// uniqueSlugs gives each fuzz worker process its own slugs.
var (
	slugPrefix = "fz" + strings.ToLower(rand.Text()[:8])
	slugSeq    atomic.Int64
)

func uniqueSlug() string { return fmt.Sprintf("%s-%d", slugPrefix, slugSeq.Add(1)) }

// createFields are the members of the body of POST /v1/tenants.
var createFields = []string{"slug", "model", "name", "tier", "server"}

// FuzzCreateTenantBody posts a valid tenant-creation body with one member's
// value replaced by any JSON text (or the whole body replaced, for the last
// field index). Whatever comes in: no 500; a refusal is a problem+json that
// names the member replaced (or "body" when the body is no longer JSON) and
// changes nothing in the catalog or the data plane; a tenant created has
// only valid values.
func FuzzCreateTenantBody(f *testing.F) {
	for i := range createFields {
		for vi, v := range hostileValues {
			// Every member gets the first values and half of the others,
			// which keeps the seeds' run (part of go test) short.
			if vi >= 4 && (vi+i)%2 != 0 {
				continue
			}
			f.Add(uint8(i), v)
		}
	}
	f.Add(uint8(0), `"acme"`)
	f.Add(uint8(1), `"schema"`)
	f.Add(uint8(1), `"SHARED"`)
	f.Add(uint8(3), `"pro"`)
	f.Add(uint8(3), `"gold"`)
	f.Add(uint8(4), `"pg1"`)
	f.Add(uint8(4), `"pg9"`)
	whole := uint8(len(createFields))
	for _, body := range []string{`{"slug":"acme","model":"shared"}{}`, `{"slug":"a","slug":"b","model":"shared"}`,
		`{"slug":"acme","model":"shared","extra":1}`, `[]`, `null`, ``, `{"slug":"acme","model":"shared"} trailing`,
		`{"SLUG":"acme","model":"shared"}`, `{"slug":"acme"}`, `{"model":"shared"}`, `{"slug":"acme","model":"shared"}}`,
		`{"slug":"acme","model":"shared"}]`} {
		f.Add(whole, body)
	}

	b := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, field uint8, value string) {
		i := int(field) % (len(createFields) + 1)
		slug := uniqueSlug()
		var body string
		if i == len(createFields) {
			body = strings.ReplaceAll(value, `"acme"`, `"`+slug+`"`)
		} else {
			members := map[string]string{"slug": `"` + slug + `"`, "model": `"shared"`, "name": `"Fuzz Inc."`, "tier": `"free"`, "server": `"pg1"`}
			members[createFields[i]] = value
			var parts []string
			for _, name := range createFields {
				parts = append(parts, `"`+name+`":`+members[name])
			}
			body = "{" + strings.Join(parts, ",") + "}"
		}
		before := b.state(t)
		resp, out := b.post(t, "/v1/tenants", body)
		p := checkProblem(t, resp, out, "POST /v1/tenants "+body)
		if resp.StatusCode < 300 {
			var tn tenancy.Tenant
			if err := json.Unmarshal(out, &tn); err != nil {
				t.Fatalf("%s: created %s (%v)", body, out, err)
			}
			b.Track(&tn)
			if tenancy.ValidateSlug(tn.Slug) != nil || tenancy.ValidateName("tier", string(tn.Tier)) != nil ||
				tenancy.ValidateName("server", tn.Placement.Server) != nil || len(tn.Name) > 200 || strings.ContainsRune(tn.Name, 0) {
				t.Fatalf("%s: created %s", body, out)
			}
			if _, err := tenancy.ParseModel(string(tn.Model)); err != nil {
				t.Fatalf("%s: created %s", body, out)
			}
			return
		}
		if after := b.state(t); after != before {
			t.Fatalf("%s: refused with %d %s, but the state changed:\n%s\nto\n%s", body, resp.StatusCode, out, before, after)
		}
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusNotFound {
			return
		}
		want := "body"
		if i < len(createFields) && json.Valid([]byte(value)) {
			want = createFields[i]
		}
		if i == len(createFields) {
			// A whole body: the problem names the body or a member.
			if !tenanttest.NamesMember(p.Field, body, createFields) {
				t.Fatalf("%s: %d names the field %q", body, resp.StatusCode, p.Field)
			}
			return
		}
		if p.Field != want {
			t.Fatalf("%s: %d %s names the field %q, want %q", body, resp.StatusCode, out, p.Field, want)
		}
	})
}

// opFields are the members that each lifecycle verb's body may have.
var opFields = map[string][]string{
	controlapi.OpChangeTier: {"tier"},
	controlapi.OpPurge:      {"confirm"},
	controlapi.OpMove:       {"model", "tier", "server", "keep_source"},
	controlapi.OpSuspend:    nil,
	controlapi.OpResume:     nil,
	controlapi.OpDelete:     nil,
	controlapi.OpRestore:    nil,
}

var opNames = []string{controlapi.OpChangeTier, controlapi.OpPurge, controlapi.OpMove, controlapi.OpSuspend,
	controlapi.OpResume, controlapi.OpDelete, controlapi.OpRestore}

// FuzzTenantOperationBody posts any body to each lifecycle verb of one
// tenant. Whatever comes in: no 500; a refusal is a problem+json, a 400 names
// the body or one of the verb's fields, and a refusal changes nothing in the
// catalog or the data plane. A move that is accepted runs to its end before
// the next input.
func FuzzTenantOperationBody(f *testing.F) {
	bodies := []string{``, `{}`, `null`, `[]`, `1`, `"x"`, `{"tier":"pro"}`, `{"tier":"Not A Tier"}`, `{"tier":null}`,
		`{"tier":1}`, `{"tier":"a\"; DROP SCHEMA x; --"}`, `{"tier":"` + strings.Repeat("t", 70) + `"}`,
		`{"confirm":"fuzz-op"}`, `{"confirm":"someone-else"}`, `{"confirm":1}`, `{"model":"schema"}`, `{"model":"shared"}`,
		`{"model":"database","server":"pg9"}`, `{"model":"schema","server":"PG1"}`, `{"model":"schema","keep_source":"yes"}`,
		`{"model":"schema","server":"pg1","keep_source":true}`, `{"model":"x\u0000"}`, `{"unknown":1}`,
		`{"tier":"pro"}{"tier":"free"}`, `{"tier":"pro","tier":"x y"}`, `{"tier":"pro"} garbage`, `{`}
	for i := range opNames {
		for _, body := range bodies {
			f.Add(uint8(i), body)
		}
	}

	b := newFuzzAPI(f)
	tn := b.CreateTenant(f, tenancy.ModelShared, "pg1")
	f.Cleanup(func() {
		// Moves may have placed it elsewhere: drop what it has now too.
		if now, err := b.Platform.Catalog.Tenant(context.Background(), tn.ID); err == nil {
			b.Track(now)
		}
	})

	f.Fuzz(func(t *testing.T, opIndex uint8, body string) {
		op := opNames[int(opIndex)%len(opNames)]
		body = strings.ReplaceAll(body, "fuzz-op", tn.Slug)
		before := b.state(t)
		resp, out := b.post(t, "/v1/tenants/"+tn.Slug+"/"+op, body)
		what := "POST " + op + " " + body
		p := checkProblem(t, resp, out, what)
		switch {
		case resp.StatusCode == http.StatusAccepted:
			var res controlapi.OpResource
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("%s: %s (%v)", what, out, err)
			}
			b.waitOperation(t, res.ID)
			return
		case resp.StatusCode < 300:
			return
		}
		if after := b.state(t); after != before {
			t.Fatalf("%s: refused with %d %s, but the state changed:\n%s\nto\n%s", what, resp.StatusCode, out, before, after)
		}
		if resp.StatusCode == http.StatusBadRequest {
			if p.Field == "" {
				t.Fatalf("%s: %s names no field", what, out)
			}
			if !tenanttest.NamesMember(p.Field, body, opFields[op]) {
				t.Fatalf("%s: %s names the field %q, not the body or one of its members", what, out, p.Field)
			}
		}
	})
}

// waitOperation waits until the operation is no longer running.
func (b *fuzzAPI) waitOperation(t *testing.T, id string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/v1/operations/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := b.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var res controlapi.OpResource
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.State != controlapi.OpRunning {
			return
		}
	}
	t.Fatalf("operation %s still running after a minute", id)
}
