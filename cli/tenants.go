package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// tenantsUsage is the synopsis of "tenancy tenants", by subcommand.
var tenantsUsage = map[string]string{
	"create":   "tenants create SLUG --model shared|schema|database [--name N] [--tier T] [--server S] [--region R] [--json]",
	"list":     "tenants list [--status S] [--model M] [--server S] [--json]",
	"show":     "tenants show SLUG [--json]",
	"suspend":  "tenants suspend SLUG [--json]",
	"resume":   "tenants resume SLUG [--json]",
	"delete":   "tenants delete SLUG [--json]",
	"restore":  "tenants restore SLUG [--json]",
	"purge":    "tenants purge SLUG --confirm SLUG [--retention DURATION] [--json]",
	"continue": "tenants continue SLUG [--json]",
	"rollback": "tenants rollback SLUG",
	"set-tier": "tenants set-tier SLUG TIER [--json]",
}

// runTenants runs "tenancy tenants …".
func (m *Main) runTenants(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return m.usageError("tenants create|list|show|suspend|resume|delete|restore|purge|continue|rollback|set-tier …")
	}
	sub, ok := tenantsUsage[args[0]]
	if !ok {
		return m.usageError("tenants create|list|show|suspend|resume|delete|restore|purge|continue|rollback|set-tier …")
	}
	var c common
	var model, name, tier, server, region, status, confirm string
	var retention time.Duration
	fs := m.flags("tenants "+args[0], &c)
	fs.StringVar(&model, "model", "", "isolation model: shared, schema or database")
	fs.StringVar(&name, "name", "", "display name")
	fs.StringVar(&tier, "tier", "", "tier (default free)")
	fs.StringVar(&server, "server", "", "create: the server to place the tenant on (default: in --region, else the least loaded); list: only this server's")
	fs.StringVar(&region, "region", "", "prefer a server of this region")
	fs.StringVar(&status, "status", "", "list: only tenants in this status")
	fs.StringVar(&confirm, "confirm", "", "purge: the tenant's slug, to confirm")
	fs.DurationVar(&retention, "retention", provision.DefaultRetention, "purge: how long a deleted tenant is kept before it may be purged")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	wantPos := map[string]int{"list": 0, "set-tier": 2}
	n, ok := wantPos[args[0]]
	if !ok {
		n = 1
	}
	if len(pos) != n || (args[0] == "create" && model == "") {
		return m.usageError(sub)
	}
	if n > 0 {
		if err := tenancy.ValidateSlug(pos[0]); err != nil {
			return err
		}
	}
	if retention <= 0 {
		return tenancy.Errorf(tenancy.CodeInvalid, "--retention must be positive, got %s", retention)
	}
	var mdl tenancy.Model
	if model != "" {
		if mdl, err = tenancy.ParseModel(model); err != nil {
			return err
		}
	}
	c.retention = retention
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	var t *tenancy.Tenant
	switch args[0] {
	case "create":
		t, err = p.CreateTenant(ctx, &provision.CreateOpts{Slug: pos[0], Name: name, Tier: tenancy.Tier(tier), Model: mdl, Server: server, Region: region})
	case "list":
		ts, err := p.Catalog.Tenants(ctx, &catalog.ListOpts{Server: server, Model: mdl, Status: tenancy.Status(status)})
		if err != nil {
			return err
		}
		return m.printTenants(c.json, ts...)
	case "show":
		return m.showTenant(ctx, p, pos[0], c.json)
	case "suspend":
		t, err = p.SuspendTenant(ctx, pos[0])
	case "resume":
		t, err = p.ResumeTenant(ctx, pos[0])
	case "delete":
		t, err = p.DeleteTenant(ctx, pos[0])
	case "restore":
		t, err = p.RestoreTenant(ctx, pos[0])
	case "purge":
		t, err = p.PurgeTenant(ctx, pos[0], &provision.PurgeOpts{Confirm: confirm})
	case "continue":
		t, err = p.ContinueTenant(ctx, pos[0])
	case "rollback":
		if err := p.RollbackTenant(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "%s: provisioning rolled back\n", pos[0])
		return nil
	case "set-tier":
		t, err = p.SetTenantTier(ctx, pos[0], tenancy.Tier(pos[1]))
	}
	if err != nil {
		return err
	}
	return m.printTenants(c.json, t)
}

// showTenant prints a tenant and, in the table form, its recent operations.
func (m *Main) showTenant(ctx context.Context, p *platform.Platform, slug string, asJSON bool) error {
	t, err := p.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return err
	}
	if err := m.printTenants(asJSON, t); err != nil || asJSON {
		return err
	}
	ops, err := p.Catalog.Operations(ctx, &catalog.OperationOpts{TenantID: t.ID, Limit: 10})
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout)
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OPERATION\tSTATE\tSTEPS DONE\tSTEP\tOPERATOR\tSTARTED\tERROR")
	for _, op := range ops {
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\t%s\n", op.Kind, op.State, op.Steps, op.Step, op.Operator,
			op.StartedAt.UTC().Format(time.RFC3339), op.Error)
	}
	return w.Flush()
}

// usageError reports bad usage of a command: the returned error says how to
// use it, and makes the binary exit with 2.
func (m *Main) usageError(u string) error {
	return fmt.Errorf("%w: tenancy %s", errUsage, u)
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
