package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
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
// an embedded PostgreSQL in a data directory, reused by a second run.
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
		r := run(t, env, "demo")
		if r.code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, r.code, r.err)
		}
		for _, want := range []string{"acme", "shared", "globex", "schema", "initech", "database"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("run %d: output lacks %q:\n%s", i, want, r.out)
			}
		}
		if strings.Count(r.out, "  3  ") != 3 {
			t.Errorf("run %d: want 3 contacts for each of the 3 tenants:\n%s", i, r.out)
		}
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
