package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestTenantLifecycleCommands takes a tenant of each model through the
// lifecycle with the binary, as an operator named by TENANCY_OPERATOR, and
// reads it back from the control plane's log. Refused commands exit with the
// code of their failure and change nothing.
func TestTenantLifecycleCommands(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, "")), "TENANCY_OPERATOR": "alice"}
	if r := run(t, env, "servers", "add", "pg1", "--dsn", s.URL(s.NewDatabase(t, "")), "--region", "eu"); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	tenant := func(r result) tenancy.Tenant {
		t.Helper()
		var ts []tenancy.Tenant
		if err := json.Unmarshal([]byte(r.out), &ts); err != nil || len(ts) != 1 {
			t.Fatalf("want one tenant as JSON: %v\n%s%s", err, r.out, r.err)
		}
		return ts[0]
	}
	must := func(args ...string) result {
		t.Helper()
		r := run(t, env, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.err)
		}
		return r
	}
	for _, model := range []string{"shared", "schema", "database"} {
		slug := pgtest.UniqueName("lc")
		if tn := tenant(must("tenants", "create", slug, "--model", model, "--region", "eu", "--tier", "pro", "--json")); tn.Status != tenancy.StatusActive || tn.Placement.Server != "pg1" {
			t.Fatalf("create: %+v", tn)
		}
		for _, c := range []struct {
			args []string
			code int
			want string // in stderr
		}{
			{[]string{"tenants", "resume", slug}, 4, "not"},
			{[]string{"tenants", "restore", slug}, 4, "is active"},
			{[]string{"tenants", "purge", slug, "--confirm", slug}, 4, "only a deleted tenant"},
			{[]string{"tenants", "continue", slug}, 4, "no unfinished operation"},
			{[]string{"tenants", "rollback", slug}, 4, "no unfinished operation"},
			{[]string{"tenants", "suspend"}, 2, "usage: tenancy tenants suspend SLUG"},
			{[]string{"tenants", "suspend", slug, "extra"}, 2, "usage: tenancy tenants suspend SLUG"},
			{[]string{"tenants", "frobnicate", slug}, 2, "usage: tenancy tenants create|list"},
			{[]string{"tenants", "suspend", "nobody-here"}, 3, "not found"},
			{[]string{"tenants", "suspend", "Bad Slug"}, 2, "invalid tenant slug"},
		} {
			if r := run(t, env, c.args...); r.code != c.code || !strings.Contains(r.err, c.want) {
				t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, r.code, r.err, c.code, c.want)
			}
		}
		steps := []struct {
			args []string
			want tenancy.Status
		}{
			{[]string{"suspend"}, tenancy.StatusSuspended},
			{[]string{"resume"}, tenancy.StatusActive},
			{[]string{"delete"}, tenancy.StatusDeleted},
			{[]string{"restore"}, tenancy.StatusActive},
			{[]string{"delete"}, tenancy.StatusDeleted},
		}
		for _, st := range steps {
			if tn := tenant(must(append([]string{"tenants", st.args[0], slug, "--json"}, st.args[1:]...)...)); tn.Status != st.want {
				t.Fatalf("%s: %s, want %s", st.args[0], tn.Status, st.want)
			}
		}
		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"tenants", "purge", slug}, 2, "confirm with its slug"},
			{[]string{"tenants", "purge", slug, "--confirm", "someone-else"}, 2, "confirm with its slug"},
			{[]string{"tenants", "purge", slug, "--confirm", slug}, 4, "can be purged from"},
			{[]string{"tenants", "purge", slug, "--confirm", slug, "--retention", "-1h"}, 2, "--retention must be positive"},
		} {
			if r := run(t, env, c.args...); r.code != c.code || !strings.Contains(r.err, c.want) {
				t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, r.code, r.err, c.code, c.want)
			}
		}
		if tn := tenant(must("tenants", "show", slug, "--json")); tn.Status != tenancy.StatusDeleted {
			t.Fatalf("refused purges changed the tenant: %+v", tn)
		}
		if tn := tenant(must("tenants", "purge", slug, "--confirm", slug, "--retention", "1ms", "--json")); tn.Status != tenancy.StatusPurged {
			t.Fatalf("purge: %+v", tn)
		}
		if r := must("tenants", "show", slug); !strings.Contains(r.out, "purged") || !strings.Contains(r.out, "purge") ||
			!strings.Contains(r.out, "operator:alice") {
			t.Errorf("show after purge:\n%s", r.out)
		}

		r := must("audit", "list", "--control", "--tenant", slug, "--json")
		var page struct {
			Events []catalog.Event `json:"events"`
		}
		if err := json.Unmarshal([]byte(r.out), &page); err != nil {
			t.Fatalf("audit list --control --json: %v\n%s", err, r.out)
		}
		var kinds []string
		for _, e := range page.Events {
			kinds = append(kinds, string(e.Kind))
			if e.Operator != "operator:alice" || e.TenantSlug != slug {
				t.Errorf("event %+v: want operator:alice on %s", e, slug)
			}
		}
		if got, want := strings.Join(kinds, " "), "tenant_created suspended resumed deleted restored deleted purged"; got != want {
			t.Errorf("control-plane events of %s:\n%s\nwant\n%s", slug, got, want)
		}
	}
	must("migrate", "up")
	if r := must("audit", "list", "--control", "--kind", "migrated", "--operator", "operator:alice"); !strings.Contains(r.out, "migrated") ||
		!strings.Contains(r.out, `"failed": 0`) {
		t.Errorf("the migration run is not in the control-plane log:\n%s", r.out)
	}
	if r := must("tenants", "list", "--status", "purged", "--json"); strings.Count(r.out, `"slug"`) != 3 {
		t.Errorf("list --status purged:\n%s", r.out)
	}
	if r := must("audit", "verify", "--control"); !strings.Contains(r.out, "verify") {
		t.Errorf("audit verify --control: %s", r.out)
	}
	if r := run(t, env, "audit", "list", "--kind", "purged", "--tenant", "someone"); r.code != 2 {
		t.Errorf("--kind without --control: exit %d %s", r.code, r.err)
	}
}

// TestOperatorsCommands: operators add prints the token once; list shows
// the operator without it; revoke is in the control-plane log by who ran it;
// bad input exits 2.
func TestOperatorsCommands(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, "")), "TENANCY_OPERATOR": "root"}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"operators"}, 2},
		{[]string{"operators", "add"}, 2},
		{[]string{"operators", "add", "Bad Name"}, 2},
		{[]string{"operators", "add", "token"}, 2},
		{[]string{"operators", "list", "extra"}, 2},
		{[]string{"operators", "promote", "alice"}, 2},
		{[]string{"operators", "revoke", "nobody"}, 3},
		{[]string{"operators", "add", "bob", "--role", "boss"}, 2},
		{[]string{"operators", "rotate", "bob", "--role", "viewer"}, 2},
	} {
		if r := run(t, env, c.args...); r.code != c.code {
			t.Errorf("%v: exit %d (%s), want %d", c.args, r.code, r.err, c.code)
		}
	}
	r := run(t, env, "operators", "add", "alice", "--json")
	var added struct {
		Name, Prefix, Token string
	}
	if err := json.Unmarshal([]byte(r.out), &added); r.code != 0 || err != nil || added.Name != "alice" || !strings.HasPrefix(added.Token, "opk_"+added.Prefix+"_") {
		t.Fatalf("operators add: %d %s %s", r.code, r.out, r.err)
	}
	if r := run(t, env, "operators", "add", "vera", "--role", "viewer"); r.code != 0 {
		t.Errorf("operators add --role viewer: %d %s", r.code, r.err)
	}
	if r := run(t, env, "operators", "list"); !regexp.MustCompile(`vera\s+viewer`).MatchString(r.out) {
		t.Errorf("operators list shows no viewer:\n%s", r.out)
	}
	if r := run(t, env, "operators", "add", "alice"); r.code != 4 {
		t.Errorf("add twice: exit %d, want 4 (conflict)", r.code)
	}
	if r := run(t, env, "operators", "list"); r.code != 0 || !strings.Contains(r.out, "alice") || strings.Contains(r.out, added.Token) {
		t.Errorf("operators list: %d %s", r.code, r.out)
	}
	if r := run(t, env, "operators", "revoke", "alice"); r.code != 0 {
		t.Fatalf("operators revoke: %d %s", r.code, r.err)
	}
	r = run(t, env, "audit", "list", "--control", "--kind", "operator_revoked", "--json")
	if r.code != 0 || !strings.Contains(r.out, `"operator": "operator:root"`) {
		t.Errorf("the revocation in the control-plane log: %d %s", r.code, r.out)
	}
}

// TestServersEncrypt: servers encrypt needs the secret key and encrypts the
// DSNs stored in clear; from then on the binary works with the key and says
// what is missing without it.
func TestServersEncrypt(t *testing.T) {
	t.Parallel()
	env := installation(t)
	if r := run(t, env, "servers", "encrypt"); r.code != 2 || !strings.Contains(r.err, "TENANCY_SECRET_KEY") {
		t.Errorf("servers encrypt without a key: %d %s", r.code, r.err)
	}
	env["TENANCY_SECRET_KEY"] = "not a key"
	if r := run(t, env, "servers", "encrypt"); r.code != 2 || !strings.Contains(r.err, "32 bytes") {
		t.Errorf("servers encrypt with a bad key: %d %s", r.code, r.err)
	}
	env["TENANCY_SECRET_KEY"] = strings.Repeat("ab", 32)
	if r := run(t, env, "servers", "encrypt"); r.code != 0 || !strings.Contains(r.out, "1 servers") {
		t.Fatalf("servers encrypt: %d %s %s", r.code, r.out, r.err)
	}
	slug := pgtest.UniqueName("enc")
	if r := run(t, env, "tenants", "create", slug, "--model", "schema"); r.code != 0 {
		t.Fatalf("tenants create with the key: %d %s", r.code, r.err)
	}
	delete(env, "TENANCY_SECRET_KEY")
	if r := run(t, env, "tenants", "create", pgtest.UniqueName("enc"), "--model", "schema"); r.code == 0 || !strings.Contains(r.err, "TENANCY_SECRET_KEY") {
		t.Errorf("tenants create without the key: %d %s", r.code, r.err)
	}
	env["TENANCY_SECRET_KEY"] = strings.Repeat("ab", 32)
	if r := run(t, env, "tenants", "delete", slug); r.code != 0 {
		t.Errorf("tenants delete: %d %s", r.code, r.err)
	}
}

// TestPlansCommands: plans set changes the flags given and keeps the rest;
// tenants limits overrides a tenant's plan and clears the overrides; bad
// input exits 2 and changes nothing.
func TestPlansCommands(t *testing.T) {
	t.Parallel()
	env := installation(t)
	limitsOf := func(args ...string) tenancy.Limits {
		t.Helper()
		r := run(t, env, append(args, "--json")...)
		var out []struct{ Limits tenancy.Limits }
		if err := json.Unmarshal([]byte(r.out), &out); r.code != 0 || err != nil || len(out) != 1 {
			t.Fatalf("%v: %d %s %s", args, r.code, r.out, r.err)
		}
		return out[0].Limits
	}
	if l := limitsOf("plans", "set", "metered", "--rps", "5", "--burst", "10", "--db-time", "0.1"); l != (tenancy.Limits{RPS: 5, Burst: 10, DBTime: 0.1}) {
		t.Errorf("a new plan: %+v", l)
	}
	if l := limitsOf("plans", "set", "metered", "--max-tx", "3", "--statement-timeout", "2s"); l != (tenancy.Limits{RPS: 5, Burst: 10, DBTime: 0.1, MaxConcurrentTx: 3, StatementTimeout: 2 * time.Second}) {
		t.Errorf("a plan changed: %+v", l)
	}
	before := run(t, env, "plans", "list", "--json").out
	for _, args := range [][]string{
		{"plans", "set", "metered", "--burst", "0"},    // a rate without a burst
		{"plans", "set", "metered", "--db-time", "-1"}, // negative
		{"plans", "set", "Bad Tier", "--rps", "1", "--burst", "1"},
		{"plans", "set"},
		{"plans", "list", "--rps", "1"},
		{"plans", "frobnicate"},
	} {
		if r := run(t, env, args...); r.code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, r.code, r.err)
		}
	}
	if after := run(t, env, "plans", "list", "--json").out; after != before || !strings.Contains(after, `"tier": "metered"`) {
		t.Errorf("bad input changed the plans:\n%s\nwas\n%s", after, before)
	}

	slug := pgtest.UniqueName("pl")
	if r := run(t, env, "tenants", "create", slug, "--model", "shared", "--tier", "metered"); r.code != 0 {
		t.Fatalf("tenants create: %d %s", r.code, r.err)
	}
	tenantLimits := func(args ...string) (int, tenancy.Limits) {
		t.Helper()
		r := run(t, env, append(append([]string{"tenants", "limits", slug}, args...), "--json")...)
		var out struct{ Limits tenancy.Limits }
		_ = json.Unmarshal([]byte(r.out), &out)
		return r.code, out.Limits
	}
	if code, l := tenantLimits("--db-time", "0.5"); code != 0 || l.DBTime != 0.5 || l.RPS != 5 {
		t.Errorf("an override: %d %+v", code, l)
	}
	if code, l := tenantLimits("--max-tx", "1"); code != 0 || l.DBTime != 0.5 || l.MaxConcurrentTx != 1 {
		t.Errorf("a second override keeps the first: %d %+v", code, l)
	}
	if code, _ := tenantLimits("--rps", "-3"); code != 2 {
		t.Errorf("a bad override: exit %d, want 2", code)
	}
	if code, l := tenantLimits("--clear"); code != 0 || l.DBTime != 0.1 || l.MaxConcurrentTx != 3 {
		t.Errorf("cleared: %d %+v", code, l)
	}
	if r := run(t, env, "tenants", "limits", "nobody-here"); r.code != 3 {
		t.Errorf("an unknown tenant: exit %d, want 3", r.code)
	}
}
