package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/move"
)

// TestMoveCommands moves a tenant across models and servers, drains a
// server, and checks that bad input fails with its exit code and changes
// nothing.
func TestMoveCommands(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, ""))}
	for _, name := range []string{"pg1", "pg2"} {
		if r := run(t, env, "servers", "add", name, "--dsn", s.URL(s.NewDatabase(t, ""))); r.code != 0 {
			t.Fatalf("servers add %s: %d %s", name, r.code, r.err)
		}
	}
	slug := pgtest.UniqueName("mv")
	other := pgtest.UniqueName("mv")
	for _, sl := range []string{slug, other} {
		if r := run(t, env, "tenants", "create", sl, "--model", "shared", "--server", "pg1"); r.code != 0 {
			t.Fatalf("tenants create: %d %s", r.code, r.err)
		}
	}
	t.Cleanup(func() {
		// The tenants' databases and roles outlive the test's databases.
		for _, sl := range []string{slug, other} {
			run(t, env, "tenants", "move", sl, "--to", "shared", "--server", "pg1")
		}
	})

	r := run(t, env, "tenants", "move", slug, "--to", "schema", "--json")
	if r.code != 0 {
		t.Fatalf("tenants move: %d %s", r.code, r.err)
	}
	var res move.Result
	if err := json.Unmarshal([]byte(r.out), &res); err != nil || res.State != move.Done || res.Tenant.Model != tenancy.ModelSchema {
		t.Fatalf("tenants move --json: %v %s", err, r.out)
	}
	if !strings.Contains(r.err, "switched") {
		t.Errorf("no progress on stderr:\n%s", r.err)
	}
	if r := run(t, env, "tenants", "move", slug, "--to", "database", "--server", "pg2"); r.code != 0 || !strings.Contains(r.out, "done") {
		t.Fatalf("tenants move to another server: %d %s %s", r.code, r.out, r.err)
	}

	// A tier change moves the tenant to its tier's model.
	if r := run(t, env, "tenants", "move", slug, "--tier", "pro", "--json"); r.code != 0 || !strings.Contains(r.out, `"to_model": "schema"`) {
		t.Fatalf("tenants move --tier pro: %d %s %s", r.code, r.out, r.err)
	}
	if r := run(t, env, "tenants", "move", slug, "--tier", "enterprise", "--server", "pg2"); r.code != 0 || !strings.Contains(r.out, "database") {
		t.Fatalf("tenants move --tier enterprise: %d %s %s", r.code, r.out, r.err)
	}

	cases := []struct {
		name string
		args []string
		code int
	}{
		{"NoModel", []string{"tenants", "move", slug}, 2},
		{"ModelAndTier", []string{"tenants", "move", slug, "--to", "shared", "--tier", "free"}, 2},
		{"BadTier", []string{"tenants", "move", slug, "--tier", "No Tier"}, 2},
		{"BadModel", []string{"tenants", "move", slug, "--to", "cluster"}, 2},
		{"BadSlug", []string{"tenants", "move", "Bad Slug", "--to", "shared"}, 2},
		{"UnknownTenant", []string{"tenants", "move", "nobody-here", "--to", "shared"}, 3},
		{"UnknownServer", []string{"tenants", "move", slug, "--to", "shared", "--server", "pg9"}, 3},
		{"SamePlacement", []string{"tenants", "move", slug, "--to", "database", "--server", "pg2"}, 2},
		{"DrainUnknown", []string{"servers", "drain", "pg9"}, 3},
		{"DrainOntoItself", []string{"servers", "drain", "pg1", "--to", "pg1"}, 2},
	}
	before := run(t, env, "tenants", "list", "--json").out
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if r := run(t, env, c.args...); r.code != c.code {
				t.Errorf("exit %d, want %d: %s", r.code, c.code, r.err)
			}
		})
	}
	if after := run(t, env, "tenants", "list", "--json").out; after != before {
		t.Errorf("bad input changed the tenants:\n%s\nwas\n%s", after, before)
	}

	// A kept source is listed until dropped.
	if r := run(t, env, "tenants", "move", slug, "--to", "schema", "--server", "pg2", "--keep-source"); r.code != 0 {
		t.Fatalf("tenants move --keep-source: %d %s", r.code, r.err)
	}
	for i, args := range [][]string{{"kept", slug}, {"kept", slug, "--drop"}, {"kept", slug}} {
		r := run(t, env, append(append([]string{"tenants"}, args...), "--json")...)
		var kept []move.Kept
		want := 1 - i/2
		if err := json.Unmarshal([]byte(r.out), &kept); r.code != 0 || err != nil || len(kept) != want || (want == 1 && kept[0].Model != tenancy.ModelDatabase) {
			t.Fatalf("tenants %v: %d %s %s, want %d kept", args, r.code, r.out, r.err, want)
		}
	}
	for _, args := range [][]string{{"kept", "Bad Slug"}, {"kept", "--drop"}, {"kept", slug, "--older-than", "1h"}, {"kept", "--older-than", "1h"}} {
		if r := run(t, env, append([]string{"tenants"}, args...)...); r.code != 2 {
			t.Errorf("tenants %v: exit %d, want 2", args, r.code)
		}
	}
	if r := run(t, env, "tenants", "kept", "--drop", "--older-than", "1h"); r.code != 0 || !strings.Contains(r.out, "0 kept copies removed") {
		t.Errorf("a sweep of kept copies: %d %s %s", r.code, r.out, r.err)
	}

	// Export a tenant, and import it into another installation as a schema tenant.
	archive := t.TempDir() + "/acme.zip"
	if r := run(t, env, "tenants", "export", slug, "--out", archive); r.code != 0 || !strings.Contains(r.err, "exported") {
		t.Fatalf("tenants export: %d %s", r.code, r.err)
	}
	other2 := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, ""))}
	if r := run(t, other2, "servers", "add", "pg1", "--dsn", s.URL(s.NewDatabase(t, ""))); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	r = run(t, other2, "tenants", "import", archive, "--model", "schema", "--json")
	if r.code != 0 || !strings.Contains(r.out, `"model": "schema"`) {
		t.Fatalf("tenants import: %d %s %s", r.code, r.out, r.err)
	}
	t.Cleanup(func() { run(t, other2, "tenants", "move", slug, "--to", "shared") })
	if r := run(t, other2, "audit", "verify", "--tenant", slug); r.code != 0 {
		t.Errorf("audit verify after import: %d %s %s", r.code, r.out, r.err)
	}
	if r := run(t, other2, "tenants", "import", archive); r.code != 4 {
		t.Errorf("importing twice: exit %d, want 4: %s", r.code, r.err)
	}

	// Drain pg1: the shared tenant left there goes to pg2.
	r = run(t, env, "servers", "drain", "pg1", "--json")
	if r.code != 0 {
		t.Fatalf("servers drain: %d %s", r.code, r.err)
	}
	var ds []drained
	if err := json.Unmarshal([]byte(r.out), &ds); err != nil || len(ds) != 1 || ds[0].Slug != other || ds[0].Result.To.Server != "pg2" {
		t.Fatalf("servers drain --json: %v %s", err, r.out)
	}
	if !strings.Contains(r.err, "[1/1] "+other) {
		t.Errorf("no progress on stderr:\n%s", r.err)
	}
	r = run(t, env, "tenants", "list", "--json")
	var all []tenancy.Tenant
	if err := json.Unmarshal([]byte(r.out), &all); err != nil {
		t.Fatal(err)
	}
	for _, tn := range all {
		if tn.Placement.Server != "pg2" || tn.Status != tenancy.StatusActive {
			t.Errorf("after the drain %s is %s on %s", tn.Slug, tn.Status, tn.Placement)
		}
	}
}
