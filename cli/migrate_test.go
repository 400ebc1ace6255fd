package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/migrate"
)

// TestMigrateCommands rolls a new migration out with the binary: status shows
// every target behind, up migrates them with progress, status then shows them
// current, and bad flags change nothing.
func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	env := installation(t)
	for _, model := range []string{"shared", "schema", "database"} {
		if r := run(t, env, "tenants", "create", pgtest.UniqueName("mg"), "--model", model); r.code != 0 {
			t.Fatalf("tenants create: %d %s", r.code, r.err)
		}
	}
	// The CRM's migrations and one more, as a directory.
	dir := t.TempDir()
	entries, err := os.ReadDir(filepath.Join("..", "examples", "crm", "migrations"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("..", "examples", "crm", "migrations", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	next := len(entries) + 1 // the new migration's version
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d_note.sql", next)), []byte(`ALTER TABLE contacts ADD COLUMN note text;`), 0o644); err != nil {
		t.Fatal(err)
	}

	status := func() (latest int, summaries []string) {
		t.Helper()
		r := run(t, env, "migrate", "status", "--migrations", dir, "--json")
		if r.code != 0 {
			t.Fatalf("migrate status: %d %s", r.code, r.err)
		}
		var st struct {
			Latest  int                    `json:"latest"`
			Targets []migrate.TargetStatus `json:"targets"`
		}
		if err := json.Unmarshal([]byte(r.out), &st); err != nil {
			t.Fatalf("migrate status --json: %v\n%s", err, r.out)
		}
		for _, tg := range st.Targets {
			summaries = append(summaries, tg.Summary)
		}
		return st.Latest, summaries
	}
	if latest, s := status(); latest != next || strings.Join(s, " ") != "behind behind behind" {
		t.Fatalf("status before: latest %d, %v; want %d and the shared tables, the schema and the database behind", latest, s, next)
	}
	for _, bad := range [][]string{
		{"migrate", "up", "--migrations", dir, "--parallel", "-1"},
		{"migrate", "up", "--migrations", dir, "--group", "colour:blue"},
		{"migrate", "sideways"},
		{"migrate", "up", "extra-argument"},
	} {
		if r := run(t, env, bad...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", bad, r.code, r.err)
		}
	}
	if _, s := status(); strings.Join(s, " ") != "behind behind behind" {
		t.Fatalf("bad commands changed the fleet: %v", s)
	}
	r := run(t, env, "migrate", "up", "--migrations", dir)
	if r.code != 0 {
		t.Fatalf("migrate up: %d %s", r.code, r.err)
	}
	if !strings.Contains(r.out, "3 migrated, 0 already current, 0 failed") || strings.Count(r.err, "migrated ") != 3 {
		t.Errorf("migrate up output:\n%s\nprogress:\n%s", r.out, r.err)
	}
	if _, s := status(); strings.Join(s, " ") != "current current current" {
		t.Errorf("status after: %v", s)
	}
	r = run(t, env, "migrate", "status", "--migrations", dir)
	if r.code != 0 || !strings.Contains(r.out, fmt.Sprintf("latest version: %d", next)) || !strings.Contains(r.out, "3 targets, 0 not current") {
		t.Errorf("migrate status table: %d\n%s%s", r.code, r.out, r.err)
	}
}

// TestOwnDataModel: a binary built around the command set with its own data
// model (Main.DataModel) provisions tenants with that model, not the CRM's.
func TestOwnDataModel(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	env := map[string]string{"TENANCY_DATABASE_URL": s.URL(s.NewDatabase(t, ""))}
	model := fstest.MapFS{"001_invoices.sql": {Data: []byte(`CREATE TABLE invoices (
		tenant_id uuid NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, total numeric NOT NULL,
		PRIMARY KEY (tenant_id, id));`)}}
	own := func(args ...string) result {
		t.Helper()
		var stdout, stderr bytes.Buffer
		m := &Main{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }, DataModel: model}
		err := m.Run(context.Background(), args)
		m.Close()
		if err != nil {
			return result{stdout.String(), err.Error(), exitCode(err)}
		}
		return result{stdout.String(), stderr.String(), 0}
	}
	dataDB := s.NewDatabase(t, "")
	if r := own("servers", "add", "pg1", "--dsn", s.URL(dataDB)); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	slug := pgtest.UniqueName("own")
	if r := own("tenants", "create", slug, "--model", "schema"); r.code != 0 {
		t.Fatalf("tenants create: %d %s", r.code, r.err)
	}
	conn, err := pgx.Connect(context.Background(), s.URL(dataDB))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var invoices, contacts bool
	err = conn.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL`,
		"tenant_"+strings.ReplaceAll(slug, "-", "_")+".invoices", "tenant_"+strings.ReplaceAll(slug, "-", "_")+".contacts").Scan(&invoices, &contacts)
	if err != nil {
		t.Fatal(err)
	}
	if !invoices || contacts {
		t.Errorf("the tenant's schema has invoices %v, contacts %v: want its own data model only", invoices, contacts)
	}
}
