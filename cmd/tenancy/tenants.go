package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/provision"
)

func (m *Main) runTenants(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errUsage
	}
	var c common
	var model, name, tier, server string
	fs := m.flags("tenants "+args[0], &c)
	fs.StringVar(&model, "model", "", "isolation model: shared, schema or database")
	fs.StringVar(&name, "name", "", "display name")
	fs.StringVar(&tier, "tier", "", "tier (default free)")
	fs.StringVar(&server, "server", "", "server to place the tenant on (default: the least loaded)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "create":
		if len(pos) != 1 || model == "" {
			return m.usageError("tenants create SLUG --model shared|schema|database")
		}
		if err := tenancy.ValidateSlug(pos[0]); err != nil {
			return err
		}
		mdl, err := tenancy.ParseModel(model)
		if err != nil {
			return err
		}
		p, _, err := m.open(ctx, &c)
		if err != nil {
			return err
		}
		t, err := p.CreateTenant(ctx, &provision.CreateOpts{Slug: pos[0], Name: name, Tier: tenancy.Tier(tier), Model: mdl, Server: server})
		if err != nil {
			return err
		}
		return m.printTenants(c.json, t)
	case "list":
		if len(pos) != 0 {
			return m.usageError("tenants list [--json]")
		}
		p, _, err := m.open(ctx, &c)
		if err != nil {
			return err
		}
		ts, err := p.Catalog.Tenants(ctx, nil)
		if err != nil {
			return err
		}
		return m.printTenants(c.json, ts...)
	case "show":
		if len(pos) != 1 {
			return m.usageError("tenants show SLUG [--json]")
		}
		if err := tenancy.ValidateSlug(pos[0]); err != nil {
			return err
		}
		p, _, err := m.open(ctx, &c)
		if err != nil {
			return err
		}
		t, err := p.Catalog.TenantBySlug(ctx, pos[0])
		if err != nil {
			return err
		}
		return m.printTenants(c.json, t)
	}
	return m.usageError("tenants create|list|show")
}

func (m *Main) usageError(u string) error {
	fmt.Fprintf(m.Stderr, "usage: tenancy %s\n", u)
	return errUsage
}

func (m *Main) printTenants(asJSON bool, ts ...*tenancy.Tenant) error {
	if asJSON {
		return writeJSON(m.Stdout, ts)
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SLUG\tMODEL\tTIER\tSTATUS\tPLACEMENT\tID")
	for _, t := range ts {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Slug, t.Model, t.Tier, t.Status, t.Placement, t.ID)
	}
	return w.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
