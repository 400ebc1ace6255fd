package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/provision"
)

// demoTenants are the sample tenants: one per isolation model.
var demoTenants = []struct {
	slug, name string
	tier       tenancy.Tier
	model      tenancy.Model
}{
	{"acme", "Acme Corp", "free", tenancy.ModelShared},
	{"globex", "Globex", "pro", tenancy.ModelSchema},
	{"initech", "Initech", "enterprise", tenancy.ModelDatabase},
}

func (m *Main) runDemo(ctx context.Context, args []string) error {
	var c common
	if _, err := parse(m.flags("demo", &c), args); err != nil {
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
	for _, d := range demoTenants {
		t, err := p.Catalog.TenantBySlug(ctx, d.slug)
		if errors.Is(err, tenancy.ErrNotFound) {
			t, err = p.CreateTenant(ctx, &provision.CreateOpts{Slug: d.slug, Name: d.name, Tier: d.tier, Model: d.model})
			if err == nil {
				err = seedDemo(ctx, p.Router.Tx, t)
			}
		}
		if err != nil {
			return fmt.Errorf("demo tenant %s: %w", d.slug, err)
		}
	}
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

// seedDemo gives a new demo tenant a company and a few contacts.
func seedDemo(ctx context.Context, tx func(context.Context, func(pgx.Tx) error) error, t *tenancy.Tenant) error {
	return tx(tenancy.WithTenant(ctx, t), func(tx pgx.Tx) error {
		var company int64
		if err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name, domain) VALUES ($1, $2, $3) RETURNING id`,
			t.ID, t.Name, t.Slug+".example").Scan(&company); err != nil {
			return err
		}
		for _, who := range []string{"Ada", "Grace", "Linus"} {
			if _, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, company_id, name, email) VALUES ($1, $2, $3, $4)`,
				t.ID, company, who, fmt.Sprintf("%s@%s.example", who, t.Slug)); err != nil {
				return err
			}
		}
		return nil
	})
}
