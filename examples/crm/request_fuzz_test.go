package crm_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// allowAll lets every login and signup through, so that fuzzing reaches the
// handlers instead of the login limiter.
type allowAll struct{}

func (allowAll) Allow(_ context.Context, _ string, l ratelimit.Limit) (ratelimit.Result, error) {
	return ratelimit.Result{Allowed: true, Limit: l}, nil
}

// fuzzRoute is a request that takes a body: its members, in order, and
// valid values for them (raw JSON, or CSV cells for the import).
type fuzzRoute struct {
	method, path string // path after /t/{slug}, or from the root when account
	account      bool   // outside any tenant: no token
	table        string // the tenant table a 2xx adds one row to, on create
	csv          bool
	members      []string
	valid        func(r *reqFuzz, tn *tenancy.Tenant) map[string]string
}

// reqFuzz is the CRM under test with a few rows in each tenant.
type reqFuzz struct {
	*testBundle
	ownerID string
	// ids are each tenant's company, contact, deal and note.
	ids   map[string]map[string]string
	conns map[string]*pgx.Conn
}

var (
	uniquePrefix = strings.ToLower(rand.Text()[:8])
	uniqueSeq    atomic.Int64
)

// uniqueEmail is an address no other input used, as JSON.
func uniqueEmail() string {
	return fmt.Sprintf(`"fz-%s-%d@example.com"`, uniquePrefix, uniqueSeq.Add(1))
}

var fuzzRoutes = func() []fuzzRoute {
	company := func(r *reqFuzz, tn *tenancy.Tenant) map[string]string {
		return map[string]string{"name": `"Initrode"`, "domain": `"initrode.example"`}
	}
	contact := func(r *reqFuzz, tn *tenancy.Tenant) map[string]string {
		return map[string]string{"name": `"Ada"`, "email": uniqueEmail(), "phone": `"+44 20 7946 0000"`, "company_id": r.ids[tn.Slug]["companies"]}
	}
	deal := func(r *reqFuzz, tn *tenancy.Tenant) map[string]string {
		return map[string]string{"title": `"Licences"`, "contact_id": r.ids[tn.Slug]["contacts"], "amount": `"1250.50"`, "stage": `"won"`}
	}
	note := func(r *reqFuzz, tn *tenancy.Tenant) map[string]string {
		ids := r.ids[tn.Slug]
		return map[string]string{"body": `"Called."`, "company_id": ids["companies"], "contact_id": ids["contacts"], "deal_id": ids["deals"]}
	}
	routes := []fuzzRoute{
		{method: "POST", path: "/companies", table: "companies", members: []string{"name", "domain"}, valid: company},
		{method: "POST", path: "/contacts", table: "contacts", members: []string{"name", "email", "phone", "company_id"}, valid: contact},
		{method: "POST", path: "/deals", table: "deals", members: []string{"title", "contact_id", "amount", "stage"}, valid: deal},
		{method: "POST", path: "/notes", table: "notes", members: []string{"body", "company_id", "contact_id", "deal_id"}, valid: note},
	}
	for _, res := range slices.Clone(routes) {
		routes = append(routes, fuzzRoute{method: "PATCH", path: res.path + "/{id}", members: res.members, valid: res.valid})
	}
	return append(routes,
		fuzzRoute{method: "POST", path: "/contacts/import", csv: true, members: []string{"name", "email", "phone"},
			valid: func(*reqFuzz, *tenancy.Tenant) map[string]string {
				return map[string]string{"name": "Grace", "email": strings.Trim(uniqueEmail(), `"`), "phone": "+1 555 0100"}
			}},
		fuzzRoute{method: "POST", path: "/api-keys", members: []string{"name", "role"},
			valid: func(*reqFuzz, *tenancy.Tenant) map[string]string {
				return map[string]string{"name": `"ci"`, "role": `"member"`}
			}},
		fuzzRoute{method: "PUT", path: "/members", members: []string{"email", "role"},
			valid: func(*reqFuzz, *tenancy.Tenant) map[string]string {
				return map[string]string{"email": `"member@example.com"`, "role": `"member"`}
			}},
		fuzzRoute{method: "POST", path: "/signup", account: true, members: []string{"email", "name", "password"},
			valid: func(*reqFuzz, *tenancy.Tenant) map[string]string {
				return map[string]string{"email": uniqueEmail(), "name": `"Grace"`, "password": `"` + password + `"`}
			}},
		fuzzRoute{method: "POST", path: "/login", account: true, members: []string{"email", "password"},
			valid: func(*reqFuzz, *tenancy.Tenant) map[string]string {
				return map[string]string{"email": `"owner@example.com"`, "password": `"` + password + `"`}
			}},
	)
}()

// body is the route's valid body with member i's value replaced by value, or
// value itself for i == len(members); the valid body for i < 0.
func (rt *fuzzRoute) body(r *reqFuzz, tn *tenancy.Tenant, i int, value string) string {
	if i == len(rt.members) {
		return value
	}
	vals := rt.valid(r, tn)
	if i >= 0 {
		vals[rt.members[i]] = value
	}
	if rt.csv {
		var cells []string
		for _, m := range rt.members {
			cells = append(cells, vals[m])
		}
		return strings.Join(rt.members, ",") + "\n" + strings.Join(cells, ",") + "\n"
	}
	var parts []string
	for _, m := range rt.members {
		parts = append(parts, `"`+m+`":`+vals[m])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// state is a digest of what the CRM's requests could change in a tenant:
// each of its tables, deleted rows included, and its API keys and members;
// and the accounts.
func (r *reqFuzz) state(t *testing.T, tn *tenancy.Tenant) (string, map[string]int) {
	t.Helper()
	ctx := context.Background()
	var sb strings.Builder
	counts := map[string]int{}
	for _, table := range []string{"companies", "contacts", "deals", "notes"} {
		var n int
		var digest string
		if err := r.conns[tn.Slug].QueryRow(ctx, `SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM `+
			pgx.Identifier{tn.Placement.Schema, table}.Sanitize()+` x WHERE tenant_id = $1`, tn.ID).Scan(&n, &digest); err != nil {
			t.Fatal(err)
		}
		counts[table] = n
		fmt.Fprintf(&sb, "%s=%d:%s\n", table, n, digest)
	}
	pool := r.Platform.Catalog.Pool()
	for _, q := range []string{
		`SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM catalog.users x`,
		`SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM catalog.memberships x WHERE tenant_id = $1`,
		`SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM catalog.api_keys x WHERE tenant_id = $1`,
	} {
		var digest string
		args := []any{tn.ID}
		if !strings.Contains(q, "$1") {
			args = nil
		}
		if err := pool.QueryRow(ctx, q, args...).Scan(&digest); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%s\n", digest)
	}
	return sb.String(), counts
}

// hostileValues are the values every member is tried with, besides fuzzing:
// wrong types, nulls, huge numbers, unicode, injections, long strings, and
// values that end in garbage.
var hostileValues = []string{
	`null`, `1`, `"a\u0000b"`, `"a\"; DROP SCHEMA x; --"`, `0`, `-1`, `1.5`, `1e309`, `9223372036854775808`, `12345678901234567890123`, `true`, `[]`, `{}`,
	`""`, `" "`, `"\u0000"`, `"\ud800"`, `"é"`, `"\u202e"`, `"1"`, `"1e3"`, `"-1"`, `"99999999999.99"`,
	`"'); DELETE FROM contacts; --"`, `"%"`, `"_"`, `"\\"`, `"ADA@EXAMPLE.COM"`,
	`"owner@example.com"`, `"owner"`, `"admin"`, `"WON"`, `"<script>"`,
	`"` + strings.Repeat("a", 201) + `"`, `"` + strings.Repeat("é", 6000) + `"`, `"x"}`, `"x" , "y"`, `"x`, ``,
}

// FuzzCRMRequest sends every CRM request that takes a body, over real HTTP
// to a real platform, with one member's value replaced by any text (or the
// whole body, for the last member index), in a tenant of each isolation
// model. Whatever comes in: never a 5xx; an error is a problem+json; a 400
// names the member replaced ("body" when the body is no longer JSON, "csv"
// for an import), or for a whole body the body or one of its members; a
// refusal changes nothing in the tenant's tables, its members and API keys
// or the accounts; a create adds exactly one row.
func FuzzCRMRequest(f *testing.F) {
	for ri, rt := range fuzzRoutes {
		for mi := range rt.members {
			for vi, v := range hostileValues {
				// Every member gets the first values and a third of the
				// others, which keeps the seeds' run (part of go test) short.
				if vi >= 4 && (vi+ri+mi)%3 != 0 {
					continue
				}
				if rt.csv {
					v = strings.Trim(v, `"`)
				}
				f.Add(uint8(ri), uint8(mi), uint8(ri+mi), v)
			}
		}
		whole := uint8(len(rt.members))
		for _, body := range []string{`{}`, `[]`, `null`, ``, `{"name":"a","name":"b"}`, `{"name":"Ada","extra":1}`,
			`{"name":"Ada"} trailing`, `{"name":"Ada"}}`, `{"name":"Ada"}]`, `{"":1}`, `{"NAME":"Ada"}`,
			"name,email\n", "name,email\nAda,ada@example.com\n", "email\nx", "name,email\n\"a,b\n", "\xff\xfe"} {
			f.Add(uint8(ri), whole, uint8(ri), body)
		}
	}

	b := setup(f, setupOpts{logins: allowAll{}})
	ctx := context.Background()
	owner, err := b.acc.UserByEmail(ctx, "owner@example.com")
	if err != nil {
		f.Fatal(err)
	}
	r := &reqFuzz{testBundle: b, ownerID: owner.ID.String(), ids: map[string]map[string]string{}, conns: map[string]*pgx.Conn{}}
	for _, tn := range b.Tenants {
		r.conns[tn.Slug] = b.AdminConn(f, tn)
		r.ids[tn.Slug] = map[string]string{}
		p := "/t/" + tn.Slug
		for _, rt := range fuzzRoutes[:4] {
			var row item
			b.do(f, b.owner, "POST", p+rt.path, rt.body(r, tn, -1, "")).want(f, 201).decode(f, &row)
			r.ids[tn.Slug][rt.table] = row.id()
		}
	}

	f.Fuzz(func(t *testing.T, route, member, tenant uint8, value string) {
		rt := &fuzzRoutes[int(route)%len(fuzzRoutes)]
		i := int(member) % (len(rt.members) + 1)
		tn := b.Tenants[int(tenant)%len(b.Tenants)]
		body := rt.body(r, tn, i, value)
		path, token := rt.path, b.owner
		if rt.account {
			token = ""
		} else {
			path = "/t/" + tn.Slug + strings.Replace(path, "{id}", r.ids[tn.Slug][strings.Trim(strings.TrimSuffix(path, "/{id}"), "/")], 1)
		}
		what := rt.method + " " + path + " " + body

		before, counts := r.state(t, tn)
		resp := b.do(t, token, rt.method, path, body)
		after, countsAfter := r.state(t, tn)
		if resp.status >= 500 {
			t.Fatalf("%s: %d %s", what, resp.status, resp.body)
		}
		if rt.method == "PUT" && resp.status < 300 {
			// Whoever the body named, the owner stays an owner.
			if err := b.acc.SetMembership(ctx, tn.ID, owner.ID, accounts.RoleOwner); err != nil {
				t.Fatal(err)
			}
		}
		if resp.status < 400 {
			if rt.table != "" && rt.method == "POST" {
				for table, n := range counts {
					want := n
					if table == rt.table {
						want++
					}
					if countsAfter[table] != want {
						t.Fatalf("%s: created, and %s went from %d to %d rows", what, table, n, countsAfter[table])
					}
				}
			}
			return
		}
		p := resp.problem
		if resp.header.Get("Content-Type") != httpx.ContentType || p.Status != resp.status || httpx.StatusCode(p.Code) != resp.status {
			t.Fatalf("%s: %d %q %s", what, resp.status, resp.header.Get("Content-Type"), resp.body)
		}
		if after != before {
			t.Fatalf("%s: refused with %d %s, but the tenant changed:\n%s\nto\n%s", what, resp.status, resp.body, before, after)
		}
		if resp.status != http.StatusBadRequest {
			return
		}
		switch {
		case rt.csv:
			if p.Field != "csv" {
				t.Fatalf("%s: %s names the field %q, want csv", what, resp.body, p.Field)
			}
		case i == len(rt.members):
			if !tenanttest.NamesMember(p.Field, body, rt.members) {
				t.Fatalf("%s: %s names the field %q, not the body or one of its members", what, resp.body, p.Field)
			}
		case !json.Valid([]byte(value)):
			if p.Field != "body" {
				t.Fatalf("%s: %s names the field %q, want body", what, resp.body, p.Field)
			}
		case p.Field != rt.members[i]:
			t.Fatalf("%s: %s names the field %q, want %q", what, resp.body, p.Field, rt.members[i])
		}
	})
}
