package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/platform"
)

// TestAuditCommands lists a tenant's log with the binary, verifies it, then
// tampers with it and sees verify name the entry and fail.
func TestAuditCommands(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	catalogURL := s.URL(s.NewDatabase(t, ""))
	env := map[string]string{"TENANCY_DATABASE_URL": catalogURL}
	if r := run(t, env, "servers", "add", "pg1", "--dsn", s.URL(s.NewDatabase(t, ""))); r.code != 0 {
		t.Fatalf("servers add: %d %s", r.code, r.err)
	}
	slug := pgtest.UniqueName("au")
	if r := run(t, env, "tenants", "create", slug, "--model", "schema"); r.code != 0 {
		t.Fatalf("tenants create: %d %s", r.code, r.err)
	}
	ctx := context.Background()
	p, err := platform.Open(ctx, platform.Config{CatalogURL: catalogURL, DataModel: crm.Migrations()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tn, err := p.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Acme", "Globex", "Initech"} {
		err := p.Router.Tx(tenancy.WithActor(tenancy.WithTenant(ctx, tn), tenancy.Actor{Kind: "user", ID: "ops"}), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, name)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	r := run(t, env, "audit", "list", "--tenant", slug, "--limit", "2", "--json")
	var page struct {
		Entries []audit.Entry `json:"entries"`
		Next    int64         `json:"next"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.out), &page) != nil || len(page.Entries) != 2 || page.Next != 2 || page.Entries[0].Actor != "user:ops" {
		t.Fatalf("audit list --limit 2: %d %s %s", r.code, r.out, r.err)
	}
	if r := run(t, env, "audit", "list", "--tenant", slug, "--after", "2"); r.code != 0 || !strings.Contains(r.out, "Initech") {
		t.Errorf("audit list --after 2: %d %s %s", r.code, r.out, r.err)
	}
	if r := run(t, env, "audit", "list", "--tenant", slug, "--row", `{"id": 2}`); r.code != 0 || !strings.Contains(r.out, "Globex") || strings.Contains(r.out, "Acme") {
		t.Errorf("audit list --row: %d %s %s", r.code, r.out, r.err)
	}
	if r := run(t, env, "audit", "verify", "--tenant", slug); r.code != 0 || !strings.Contains(r.out, "3 entries verify") {
		t.Errorf("audit verify: %d %s %s", r.code, r.out, r.err)
	}
	for _, bad := range []struct {
		args []string
		code int
	}{
		{[]string{"audit", "list", "--tenant", slug, "--since", "yesterday"}, 2},
		{[]string{"audit", "list", "--tenant", slug, "--limit", "0"}, 2},
		{[]string{"audit", "list", "--tenant", slug, "--row", "7"}, 2},
		{[]string{"audit", "list", "--control", "--row", `{"id": 1}`}, 2},
		{[]string{"audit", "verify", "--tenant", "no-such-tenant"}, 3},
		{[]string{"audit", "verify"}, 2},
		{[]string{"audit", "erase", "--tenant", slug}, 2},
	} {
		if r := run(t, env, bad.args...); r.code != bad.code {
			t.Errorf("%v: exit %d, want %d: %s", bad.args, r.code, bad.code, r.err)
		}
	}

	conn, err := pgx.Connect(ctx, s.URL(tn.Placement.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE `+dataplane.Ident(tn.Placement.Schema, dataplane.AuditTable)+` SET changes = '{}' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "audit", "verify", "--tenant", slug)
	if r.code != 1 || !strings.Contains(r.out, "TAMPERED at entry 2") {
		t.Errorf("audit verify after tampering: %d %s %s", r.code, r.out, r.err)
	}
}
