package crm_test

// End to end over real HTTP on real PostgreSQL: one tenant per isolation
// model, users with memberships, tokens and API keys.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/ratelimit"
)

type testBundle struct {
	*tenanttest.Bundle
	srv *httptest.Server
	acc *accounts.Accounts
	// owner is an owner of every tenant; member a member of the first only.
	owner, member string
}

const password = "correct horse battery"

// setupOpts choose what the platform under test has.
type setupOpts struct {
	jobs   bool // a jobs client, so that imports run in the background
	limits bool // tenants' plans enforced
	// logins, when set, limits logins and signups instead of the default.
	logins ratelimit.Limiter
}

// setup serves the CRM on a platform with one tenant per model.
func setup(t testing.TB, opts setupOpts) *testBundle {
	t.Helper()
	ctx := context.Background()
	to := &tenanttest.Opts{PerModel: 1}
	if opts.limits {
		to.Limits = &platform.LimitsConfig{}
	}
	b := &testBundle{Bundle: tenanttest.Setup(t, to)}
	cfg := &crm.Config{LoginLimiter: opts.logins}
	if opts.jobs {
		workers := river.NewWorkers()
		crm.AddWorkers(workers, b.Platform)
		jc, err := jobs.Open(ctx, b.Platform, &jobs.Config{Workers: workers, FetchPollInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := jc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = jc.Stop(sctx)
		})
		cfg.Jobs = jc
	}
	app, err := crm.New(ctx, b.Platform, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.acc = app.Accounts()
	b.srv = httptest.NewServer(app)
	t.Cleanup(b.srv.Close)

	owner, err := b.acc.CreateUser(ctx, &accounts.NewUser{Email: "owner@example.com", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range b.Tenants {
		if err := b.acc.SetMembership(ctx, tn.ID, owner.ID, accounts.RoleOwner); err != nil {
			t.Fatal(err)
		}
	}
	member, err := b.acc.CreateUser(ctx, &accounts.NewUser{Email: "member@example.com", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.acc.SetMembership(ctx, b.Tenants[0].ID, member.ID, accounts.RoleMember); err != nil {
		t.Fatal(err)
	}
	b.owner = b.login(t, "owner@example.com")
	b.member = b.login(t, "member@example.com")
	return b
}

type response struct {
	status  int
	header  http.Header
	body    []byte
	problem httpx.Problem
}

// decode decodes the body into v.
func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request; body is JSON-encoded unless it is a string.
func (b *testBundle) do(t testing.TB, token, method, path string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		j, _ := json.Marshal(v)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	r.body, _ = io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") == httpx.ContentType {
		_ = json.Unmarshal(r.body, &r.problem)
	}
	return r
}

// want fails unless the response has the status.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// wantProblem fails unless the response is a problem with the status and field.
func (r response) wantProblem(t testing.TB, status int, field string) {
	t.Helper()
	r.want(t, status)
	if r.header.Get("Content-Type") != httpx.ContentType || r.problem.Field != field {
		t.Fatalf("want a problem naming field %q, got %s %s", field, r.header.Get("Content-Type"), r.body)
	}
}

func (b *testBundle) login(t testing.TB, email string) string {
	t.Helper()
	var s struct{ Token string }
	b.do(t, "", "POST", "/login", map[string]string{"email": email, "password": password}).want(t, 200).decode(t, &s)
	return s.Token
}

// count counts the rows of a tenant table, deleted ones included, as the
// administrator: what the API must not have changed.
func (b *testBundle) count(t testing.TB, tn *tenancy.Tenant, table string) int {
	t.Helper()
	var n int
	conn := b.AdminConn(t, tn)
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{tn.Placement.Schema, table}.Sanitize()+
		` WHERE tenant_id = $1`, tn.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type item map[string]any

func (it item) id() string { return fmt.Sprint(it["id"]) }

func TestCRM(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})

	for _, tn := range b.Tenants {
		t.Run(string(tn.Model), func(t *testing.T) {
			p := "/t/" + tn.Slug
			var company, contact, deal, note item
			r := b.do(t, b.owner, "POST", p+"/companies", item{"name": "Initrode", "domain": "initrode.example"}).want(t, 201)
			r.decode(t, &company)
			if loc := r.header.Get("Location"); loc != p+"/companies/"+company.id() {
				t.Errorf("Location %q", loc)
			}
			b.do(t, b.owner, "POST", p+"/contacts", item{"name": "Ada", "email": "ADA@initrode.example", "company_id": company["id"]}).
				want(t, 201).decode(t, &contact)
			if contact["email"] != "ada@initrode.example" || fmt.Sprint(contact["company_id"]) != company.id() {
				t.Fatalf("contact %v", contact)
			}
			b.do(t, b.owner, "POST", p+"/deals", item{"title": "Licences", "contact_id": contact["id"], "amount": 1250.5, "stage": "qualified"}).
				want(t, 201).decode(t, &deal)
			if deal["amount"] != "1250.50" {
				t.Errorf("amount %v", deal["amount"])
			}
			b.do(t, b.owner, "POST", p+"/notes", item{"body": "Called; wants a demo.", "deal_id": deal["id"], "contact_id": contact["id"]}).
				want(t, 201).decode(t, &note)

			// Update, filter, search.
			var updated item
			b.do(t, b.owner, "PATCH", p+"/deals/"+deal.id(), item{"stage": "won"}).want(t, 200).decode(t, &updated)
			if updated["stage"] != "won" || updated["title"] != "Licences" {
				t.Errorf("updated %v", updated)
			}
			var pg struct {
				Items []item
				Next  string `json:"next_cursor"`
			}
			b.do(t, b.owner, "GET", p+"/deals?stage=won&contact_id="+contact.id(), nil).want(t, 200).decode(t, &pg)
			if len(pg.Items) != 1 {
				t.Errorf("filtered deals %v", pg.Items)
			}
			b.do(t, b.owner, "GET", p+"/contacts?q=ADA", nil).want(t, 200).decode(t, &pg)
			if len(pg.Items) != 1 || pg.Items[0].id() != contact.id() {
				t.Errorf("search %v", pg.Items)
			}

			// Delete is soft; restore brings the row back.
			b.do(t, b.owner, "DELETE", p+"/notes/"+note.id(), nil).want(t, 204)
			b.do(t, b.owner, "GET", p+"/notes/"+note.id(), nil).want(t, 404)
			b.do(t, b.owner, "GET", p+"/notes?deleted=only", nil).want(t, 200).decode(t, &pg)
			if len(pg.Items) != 1 || pg.Items[0]["deleted_at"] == nil {
				t.Errorf("deleted notes %v", pg.Items)
			}
			if n := b.count(t, tn, "notes"); n != 1 {
				t.Errorf("the deleted note is gone from the table (%d rows)", n)
			}
			b.do(t, b.owner, "POST", p+"/notes/"+note.id()+"/restore", nil).want(t, 200)
			b.do(t, b.owner, "GET", p+"/notes/"+note.id(), nil).want(t, 200)
			b.do(t, b.owner, "POST", p+"/notes/"+note.id()+"/restore", nil).want(t, 404)

			// A deleted company cannot be referenced.
			var gone item
			b.do(t, b.owner, "POST", p+"/companies", item{"name": "Gone Ltd"}).want(t, 201).decode(t, &gone)
			b.do(t, b.owner, "DELETE", p+"/companies/"+gone.id(), nil).want(t, 204)
			b.do(t, b.owner, "PATCH", p+"/contacts/"+contact.id(), item{"company_id": gone["id"]}).wantProblem(t, 400, "company_id")
		})
	}

	t.Run("Pagination", func(t *testing.T) {
		tn := b.Tenants[0]
		for i := range 5 {
			b.do(t, b.owner, "POST", "/t/"+tn.Slug+"/companies", item{"name": fmt.Sprintf("Page Co %d", i)}).want(t, 201)
		}
		seen := map[string]bool{}
		path := "/t/" + tn.Slug + "/companies?q=Page+Co&limit=2"
		for pages := 0; ; pages++ {
			var pg struct {
				Items []item
				Next  string `json:"next_cursor"`
			}
			b.do(t, b.owner, "GET", path, nil).want(t, 200).decode(t, &pg)
			for _, it := range pg.Items {
				if seen[it.id()] {
					t.Fatalf("item %s on two pages", it.id())
				}
				seen[it.id()] = true
			}
			if pg.Next == "" {
				break
			}
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			path = "/t/" + tn.Slug + "/companies?q=Page+Co&limit=2&cursor=" + pg.Next
		}
		if len(seen) != 5 {
			t.Errorf("saw %d of 5 companies", len(seen))
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		tn := b.Tenants[1]
		p := "/t/" + tn.Slug
		var c item
		b.do(t, b.owner, "POST", p+"/contacts", item{"name": "Grace", "email": "grace@example.com"}).want(t, 201).decode(t, &c)
		before := b.count(t, tn, "contacts")
		cases := []struct {
			name, method, path string
			body               any
			status             int
			field              string
		}{
			{"BadEmail", "POST", "/contacts", item{"name": "X", "email": "not-an-email"}, 400, "email"},
			{"MissingName", "POST", "/contacts", item{"email": "x@example.com"}, 400, "name"},
			{"UnknownField", "POST", "/contacts", item{"name": "X", "email": "x@example.com", "tenant_id": tn.ID}, 400, "tenant_id"},
			{"NotJSON", "POST", "/contacts", "{", 400, "body"},
			{"NoSuchCompany", "POST", "/contacts", item{"name": "X", "email": "x@example.com", "company_id": 999999}, 400, "company_id"},
			{"CompanyNotANumber", "POST", "/contacts", item{"name": "X", "email": "x@example.com", "company_id": "1; DROP TABLE contacts"}, 400, "company_id"},
			{"DuplicateEmail", "POST", "/contacts", item{"name": "X", "email": "GRACE@example.com"}, 409, "email"},
			{"EmptyName", "PATCH", "/contacts/" + c.id(), item{"name": "  "}, 400, "name"},
			{"NullName", "PATCH", "/contacts/" + c.id(), item{"name": nil}, 400, "name"},
			{"NothingToChange", "PATCH", "/contacts/" + c.id(), item{}, 400, "body"},
			{"BadStage", "POST", "/deals", item{"title": "X", "contact_id": c["id"], "stage": "maybe"}, 400, "stage"},
			{"NegativeAmount", "POST", "/deals", item{"title": "X", "contact_id": c["id"], "amount": -5}, 400, "amount"},
			{"BadID", "GET", "/contacts/abc", nil, 400, "id"},
			{"BadCursor", "GET", "/contacts?cursor=Zm9v", nil, 400, "cursor"},
			{"BadLimit", "GET", "/contacts?limit=1000", nil, 400, "limit"},
			{"BadFilter", "GET", "/contacts?password=x", nil, 400, "password"},
			{"BadCSV", "POST", "/contacts/import", "name,email\nAda,ada@example.com\nBob,bob-at-example\n", 400, "csv"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				b.do(t, b.owner, c.method, p+c.path, c.body).wantProblem(t, c.status, c.field)
			})
		}
		if after := b.count(t, tn, "contacts"); after != before {
			t.Errorf("bad input changed the contacts: %d → %d", before, after)
		}
	})

	t.Run("Membership", func(t *testing.T) {
		a, other := b.Tenants[0], b.Tenants[1]
		b.do(t, b.member, "GET", "/t/"+a.Slug+"/contacts", nil).want(t, 200)
		// A valid token on a tenant without membership.
		b.do(t, b.member, "GET", "/t/"+other.Slug+"/contacts", nil).wantProblem(t, 403, "")
		b.do(t, b.member, "POST", "/t/"+other.Slug+"/contacts", item{"name": "Eve", "email": "eve@example.com"}).wantProblem(t, 403, "")
		b.do(t, "", "GET", "/t/"+a.Slug+"/contacts", nil).wantProblem(t, 401, "")
		b.do(t, b.owner+"x", "GET", "/t/"+a.Slug+"/contacts", nil).wantProblem(t, 401, "")
		// Roles: a member may not restore, nor manage keys or members.
		b.do(t, b.member, "POST", "/t/"+a.Slug+"/contacts/1/restore", nil).wantProblem(t, 403, "")
		b.do(t, b.member, "POST", "/t/"+a.Slug+"/api-keys", item{"name": "k"}).wantProblem(t, 403, "")
		b.do(t, b.member, "PUT", "/t/"+a.Slug+"/members", item{"email": "member@example.com", "role": "owner"}).wantProblem(t, 403, "")

		var me struct{ Tenants []accounts.Membership }
		b.do(t, b.member, "GET", "/me", nil).want(t, 200).decode(t, &me)
		if len(me.Tenants) != 1 || me.Tenants[0].TenantSlug != a.Slug || me.Tenants[0].Role != accounts.RoleMember {
			t.Errorf("me: %+v", me)
		}
		b.do(t, "", "POST", "/login", item{"email": "member@example.com", "password": "wrong password"}).wantProblem(t, 401, "")
		b.do(t, "", "POST", "/signup", item{"email": "new@example", "password": password}).wantProblem(t, 400, "email")
		b.do(t, "", "POST", "/signup", item{"email": "new@example.com", "password": "short"}).wantProblem(t, 400, "password")
		b.do(t, "", "POST", "/signup", item{"email": "member@example.com", "password": password}).wantProblem(t, 409, "email")
		b.do(t, "", "POST", "/signup", item{"email": "new@example.com", "name": "New", "password": password}).want(t, 201)
	})

	t.Run("APIKeys", func(t *testing.T) {
		a, other := b.Tenants[0], b.Tenants[2]
		var k struct {
			ID     string
			Secret string
		}
		b.do(t, b.owner, "POST", "/t/"+a.Slug+"/api-keys", item{"name": "importer"}).want(t, 201).decode(t, &k)
		if !strings.HasPrefix(k.Secret, "tk_") {
			t.Fatalf("key %+v", k)
		}
		r := b.do(t, b.owner, "GET", "/t/"+a.Slug+"/api-keys", nil).want(t, 200)
		if bytes.Contains(r.body, []byte(k.Secret)) || !bytes.Contains(r.body, []byte(k.ID)) {
			t.Errorf("the key list shows the secret or lacks the key: %s", r.body)
		}
		var c item
		b.do(t, k.Secret, "POST", "/t/"+a.Slug+"/contacts", item{"name": "Robot", "email": "robot@example.com"}).want(t, 201).decode(t, &c)
		b.do(t, k.Secret, "GET", "/t/"+other.Slug+"/contacts", nil).wantProblem(t, 403, "")
		b.do(t, k.Secret, "GET", "/t/"+a.Slug+"/api-keys", nil).wantProblem(t, 403, "") // a member key
		var entries struct {
			Items []struct{ Actor, Table, Op string }
		}
		b.do(t, b.owner, "GET", "/t/"+a.Slug+"/audit?table=contacts&actor=api_key:"+k.ID, nil).want(t, 200).decode(t, &entries)
		if len(entries.Items) != 1 || entries.Items[0].Op != "insert" {
			t.Errorf("audit of the key's insert: %+v", entries.Items)
		}
		b.do(t, b.owner, "DELETE", "/t/"+a.Slug+"/api-keys/"+k.ID, nil).want(t, 204)
		b.do(t, k.Secret, "GET", "/t/"+a.Slug+"/contacts", nil).wantProblem(t, 401, "")
	})

	t.Run("AuditCarriesTheRequest", func(t *testing.T) {
		tn := b.Tenants[2]
		var c item
		b.do(t, b.owner, "POST", "/t/"+tn.Slug+"/contacts", item{"name": "Linus", "email": "linus@example.com"},
			"User-Agent", "crm-test/1.0", "X-Request-Id", "req-audit-1").want(t, 201).decode(t, &c)
		var owner struct{ User accounts.User }
		b.do(t, b.owner, "GET", "/me", nil).want(t, 200).decode(t, &owner)
		var entries struct{ Items []crmEntry }
		b.do(t, b.owner, "GET", "/t/"+tn.Slug+"/audit?table=contacts", nil).want(t, 200).decode(t, &entries)
		var found bool
		for _, e := range entries.Items {
			if e.RequestID == "req-audit-1" {
				found = true
				if e.Actor != "user:"+owner.User.ID.String() || e.ClientIP != "127.0.0.1" || e.UserAgent != "crm-test/1.0" || e.Op != "insert" {
					t.Errorf("entry %+v", e)
				}
			}
		}
		if !found {
			t.Errorf("no audit entry for the request: %+v", entries.Items)
		}
	})

	t.Run("ImportInline", func(t *testing.T) {
		tn := b.Tenants[0]
		var res crm.ImportResult
		b.do(t, b.owner, "POST", "/t/"+tn.Slug+"/contacts/import", "name,email,phone\nAnn,ann@example.com,+1 555\nBen,ben@example.com,\nAnn again,ANN@example.com,\n").
			want(t, 200).decode(t, &res)
		if res.Imported != 2 || res.Skipped != 1 {
			t.Errorf("import %+v", res)
		}
	})
}

type crmEntry struct {
	Actor     string `json:"actor"`
	ClientIP  string `json:"client_ip"`
	UserAgent string `json:"user_agent"`
	RequestID string `json:"request_id"`
	Op        string `json:"op"`
}

// TestImportInBackground imports a CSV through a background job: it runs
// under the tenant it was enqueued under, as the user who enqueued it, and
// writes only that tenant's rows.
func TestImportInBackground(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{jobs: true})
	a := b.Tenants[1] // the schema tenant
	before := map[string]int{}
	for _, tn := range b.Tenants {
		before[tn.Slug] = b.count(t, tn, "contacts")
	}
	var job struct {
		JobID  int64 `json:"job_id"`
		Rows   int
		Status string
	}
	b.do(t, b.owner, "POST", "/t/"+a.Slug+"/contacts/import", "name,email\nAnn,ann@example.com\nBen,ben@example.com\n").
		want(t, 202).decode(t, &job)
	if job.Rows != 2 {
		t.Fatalf("job %+v", job)
	}
	path := fmt.Sprintf("/t/%s/jobs/%d", a.Slug, job.JobID)
	if job.Status != path {
		t.Errorf("the job's status is at %q, want %q", job.Status, path)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var st struct{ State string }
		b.do(t, b.owner, "GET", path, nil).want(t, 200).decode(t, &st)
		if st.State == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the import job is %s after 20s", st.State)
		}
	}
	for _, tn := range b.Tenants {
		want := before[tn.Slug]
		if tn.ID == a.ID {
			want += 2
		}
		if got := b.count(t, tn, "contacts"); got != want {
			t.Errorf("%s (%s) has %d contacts, want %d", tn.Slug, tn.Model, got, want)
		}
	}
	// The job is the tenant's: another tenant's path does not show it.
	other := b.Tenants[0]
	b.do(t, b.owner, "GET", fmt.Sprintf("/t/%s/jobs/%d", other.Slug, job.JobID), nil).wantProblem(t, 404, "")
	// The audit log names the user who imported.
	var entries struct{ Items []crmEntry }
	b.do(t, b.owner, "GET", "/t/"+a.Slug+"/audit?table=contacts", nil).want(t, 200).decode(t, &entries)
	if n := len(entries.Items); n < 2 || !strings.HasPrefix(entries.Items[n-1].Actor, "user:") || !strings.HasPrefix(entries.Items[n-1].RequestID, "job-") {
		t.Errorf("audit of the import: %+v", entries.Items)
	}
}

// TestLoginThrottle: password guessing on one account is slowed down.
func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var last response
	for i := 0; i < 12; i++ {
		last = b.do(t, "", "POST", "/login", item{"email": "member@example.com", "password": "guess " + fmt.Sprint(i)})
		if last.status == 429 {
			break
		}
		last.wantProblem(t, 401, "")
	}
	if last.status != 429 || last.problem.Code != tenancy.CodeRateLimited || last.header.Get("Retry-After") == "" {
		t.Fatalf("12 wrong passwords: %d %s", last.status, last.body)
	}
	// Even the right password waits now; another account does not.
	b.do(t, "", "POST", "/login", item{"email": "member@example.com", "password": password}).wantProblem(t, 429, "")
	b.do(t, "", "POST", "/login", item{"email": "owner@example.com", "password": password}).want(t, 200)
}

// TestPlanLimits: with limits on, a tenant over its plan's request budget
// gets 429, and the other tenants do not notice.
func TestPlanLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{limits: true})
	noisy, quiet := b.Tenants[0], b.Tenants[1]
	rps, burst := 0.01, 3
	if err := b.Platform.Catalog.SetOverrides(context.Background(), noisy.ID, catalog.Overrides{RPS: &rps, Burst: &burst}); err != nil {
		t.Fatal(err)
	}
	var limited response
	for i := 0; i < 50 && limited.status == 0; i++ {
		if r := b.do(t, b.owner, "GET", "/t/"+noisy.Slug+"/contacts", nil); r.status == 429 {
			limited = r
		}
		time.Sleep(10 * time.Millisecond) // the override reaches the cache by notification
	}
	if limited.status != 429 || limited.problem.Code != tenancy.CodeRateLimited || limited.header.Get("Retry-After") == "" {
		t.Fatalf("the noisy tenant was never limited: %d %s", limited.status, limited.body)
	}
	b.do(t, b.owner, "GET", "/t/"+quiet.Slug+"/contacts", nil).want(t, 200)
}
