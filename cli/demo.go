package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// demoTenantSpec is a sample tenant.
type demoTenantSpec struct {
	slug, name string
	tier       tenancy.Tier
	model      tenancy.Model
}

// demoTenants are the sample tenants: one per isolation model.
var demoTenants = []demoTenantSpec{
	{"acme", "Acme Corp", "free", tenancy.ModelShared},
	{"globex", "Globex", "pro", tenancy.ModelSchema},
	{"initech", "Initech", "enterprise", tenancy.ModelDatabase},
}

// The demo user, an owner of every sample tenant.
const (
	demoEmail    = "demo@example.com"
	demoPassword = "demo-password"
)

func (m *Main) runDemo(ctx context.Context, args []string) error {
	var c common
	var sf serveFlags
	fs := m.flags("demo", &c)
	m.serveFlags(fs, &sf, "127.0.0.1:8080")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	sf.fallbackPort = !flagSet(fs, "addr")
	c.limits = true
	var err error
	if c.redis, err = m.redisLimits(&sf); err != nil {
		return err
	}
	p, dataURL, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	servers, err := p.Catalog.Servers(ctx)
	if err != nil {
		return err
	}
	if len(servers) == 0 {
		if dataURL == "" {
			return errors.New("the catalog has no server: add one with `tenancy servers add NAME --dsn URL`")
		}
		if err := p.AddServer(ctx, &tenancy.Server{Name: "local", DSN: dataURL, Region: "local"}); err != nil {
			return err
		}
	}
	if err := m.demoCatchUp(ctx, p); err != nil {
		return err
	}
	acc, err := accounts.New(ctx, accounts.Config{Catalog: p.Catalog})
	if err != nil {
		return err
	}
	user, err := acc.UserByEmail(ctx, demoEmail)
	if errors.Is(err, tenancy.ErrNotFound) {
		user, err = acc.CreateUser(ctx, &accounts.NewUser{Email: demoEmail, Name: "Demo", Password: demoPassword})
	}
	if err != nil {
		return fmt.Errorf("demo user: %w", err)
	}
	for _, d := range demoTenants {
		t, err := demoTenant(ctx, p, d)
		if err == nil {
			err = acc.SetMembership(ctx, t.ID, user.ID, accounts.RoleOwner)
		}
		if err != nil {
			return fmt.Errorf("demo tenant %s: %w", d.slug, err)
		}
	}
	if err := m.printDemoTenants(ctx, p); err != nil {
		return err
	}
	return m.serve(ctx, p, acc, &sf, true)
}

// demoTenant returns the demo tenant d, created and seeded if needed. A run
// stopped half-way (Ctrl-C during the first run) left it provisioning, or
// not seeded: it is finished now.
func demoTenant(ctx context.Context, p *platform.Platform, d demoTenantSpec) (*tenancy.Tenant, error) {
	t, err := p.Catalog.TenantBySlug(ctx, d.slug)
	switch {
	case errors.Is(err, tenancy.ErrNotFound):
		t, err = p.CreateTenant(ctx, &provision.CreateOpts{Slug: d.slug, Name: d.name, Tier: d.tier, Model: d.model})
	case err == nil && t.Status == tenancy.StatusProvisioning:
		t, err = p.ContinueTenant(ctx, d.slug)
	}
	if err != nil {
		return nil, err
	}
	// Seeded once, in one transaction: its entry in the audit log says so.
	var seeded bool
	err = p.Router.Tx(tenancy.WithTenant(ctx, t), func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenancy_audit WHERE actor = $1)`, demoSeeder.String()).Scan(&seeded)
	})
	if err != nil || seeded {
		return t, err
	}
	return t, seedDemo(ctx, p, t)
}

// demoSeeder is the actor of the demo's sample data.
var demoSeeder = tenancy.Actor{Kind: "system", ID: "demo-seed"}

// demoCatchUp brings the tenants of a data directory kept from an earlier
// run up to date when that run had an older data model or an older release
// of tenancy: the demo migrates for its user. (`tenancy serve` does not: in
// production a fleet migration is the operator's step, with its canary.)
func (m *Main) demoCatchUp(ctx context.Context, p *platform.Platform) error {
	mg, err := p.Migrator(nil)
	if err != nil {
		return err
	}
	st, err := mg.Status(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(st, func(s migrate.TargetStatus) bool { return s.Summary == "behind" || s.Summary == "stale" }) {
		return nil
	}
	rep, err := p.MigrateUp(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("bring the demo's tenants up to date (see `tenancy migrate status`): %w", err)
	}
	fmt.Fprintf(m.Stdout, "Brought %d of the demo's targets up to date (data model version %d).\n", rep.Migrated, p.Model.Latest())
	return nil
}

func (m *Main) printDemoTenants(ctx context.Context, p *platform.Platform) error {
	ts, err := p.Catalog.Tenants(ctx, nil)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tMODEL\tTIER\tSTATUS\tPLACEMENT\tCONTACTS\tSEEN AS")
	for _, t := range ts {
		var n int
		var user string
		err := p.Router.Tx(tenancy.WithTenant(ctx, t), func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*), current_user FROM contacts`).Scan(&n, &user)
		})
		if err != nil {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t-\t%v\n", t.Slug, t.Model, t.Tier, t.Status, t.Placement, err)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.Slug, t.Model, t.Tier, t.Status, t.Placement, n, user)
	}
	return w.Flush()
}

// seedDemo gives a new demo tenant a company, a few contacts, a deal and a
// note, written as the system actor so that the audit log says who.
func seedDemo(ctx context.Context, p *platform.Platform, t *tenancy.Tenant) error {
	ctx = tenancy.WithActor(tenancy.WithTenant(ctx, t), demoSeeder)
	return p.Router.Tx(ctx, func(tx pgx.Tx) error {
		var company, contact, deal int64
		if err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name, domain) VALUES ($1, $2, $3) RETURNING id`,
			t.ID, t.Name, t.Slug+".example").Scan(&company); err != nil {
			return err
		}
		for _, who := range []string{"Ada", "Grace", "Linus"} {
			if err := tx.QueryRow(ctx, `INSERT INTO contacts (tenant_id, company_id, name, email) VALUES ($1, $2, $3, $4) RETURNING id`,
				t.ID, company, who, fmt.Sprintf("%s@%s.example", strings.ToLower(who), t.Slug)).Scan(&contact); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO deals (tenant_id, contact_id, title, amount, stage) VALUES ($1, $2, $3, 4200, 'qualified') RETURNING id`,
			t.ID, contact, "Annual plan for "+t.Name).Scan(&deal); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO notes (tenant_id, deal_id, contact_id, body) VALUES ($1, $2, $3, $4)`,
			t.ID, deal, contact, "Wants the "+string(t.Tier)+" tier; call back next week.")
		return err
	})
}

// demoSuffix makes the email of the printed "create a contact" line unique
// to this run, so that the line works again on the next run.
func demoSuffix() string { return strings.ToLower(rand.Text()[:6]) }
