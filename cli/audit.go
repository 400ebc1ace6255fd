package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/platform"
)

// runAudit runs "tenancy audit list|verify --tenant SLUG".
func (m *Main) runAudit(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errUsage
	}
	var c common
	var slug, since, until, kind, operator string
	var control bool
	var opts audit.ListOpts
	fs := m.flags("audit "+args[0], &c)
	fs.BoolVar(&control, "control", false, "the control plane's log instead of a tenant's")
	fs.StringVar(&kind, "kind", "", "--control: only events of this kind, e.g. purged")
	fs.StringVar(&operator, "operator", "", "--control: only events by this operator, e.g. operator:alice")
	fs.StringVar(&slug, "tenant", "", "the tenant's slug")
	fs.StringVar(&since, "since", "", "entries at or after this time (RFC 3339)")
	fs.StringVar(&until, "until", "", "entries before this time (RFC 3339)")
	fs.StringVar(&opts.Actor, "actor", "", "only this actor, e.g. user:42")
	fs.StringVar(&opts.Table, "table", "", "only this table")
	fs.Int64Var(&opts.After, "after", 0, "cursor: the number printed after \"more: --after\" below the previous page")
	var row string
	fs.StringVar(&row, "row", "", `only the entries of one row, by its key as JSON, e.g. '{"id": 7}'`)
	fs.IntVar(&opts.Limit, "limit", 100, "page size, 1 to 1000")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 || (args[0] != "list" && args[0] != "verify") {
		return m.usageError("audit list|verify --tenant SLUG | --control")
	}
	if slug != "" || !control {
		if err := tenancy.ValidateSlug(slug); err != nil {
			return err
		}
	}
	if opts.Limit < 1 {
		return tenancy.Errorf(tenancy.CodeInvalid, "--limit must be between 1 and 1000, got %d", opts.Limit)
	}
	for _, f := range []struct {
		text string
		dst  *time.Time
	}{{since, &opts.Since}, {until, &opts.Until}} {
		if f.text == "" {
			continue
		}
		if *f.dst, err = time.Parse(time.RFC3339, f.text); err != nil {
			return tenancy.Errorf(tenancy.CodeInvalid, "--since and --until take RFC 3339 times like 2026-11-24T10:00:00Z, got %q", f.text)
		}
	}
	if row != "" {
		if control {
			return m.usageError("audit list --tenant SLUG --row KEY: --row is for a tenant's log")
		}
		if opts.Row, err = audit.ParseRow(row); err != nil {
			return err
		}
	}
	if (kind != "" || operator != "") && !control {
		return m.usageError("audit list --control [--kind K] [--operator O]: --kind and --operator are for the control plane's log")
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	if control {
		return m.controlAudit(ctx, p, args[0], slug, &catalog.EventOpts{Kind: catalog.EventKind(kind), Operator: operator,
			Since: opts.Since, Until: opts.Until, After: opts.After, Limit: opts.Limit}, c.json)
	}
	t, err := p.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return err
	}
	s, err := p.Catalog.Server(ctx, t.Placement.Server)
	if err != nil {
		return err
	}
	cfg, err := dataplane.AdminConfig(s, t.Placement.Database)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s/%s: %w", s.Name, cfg.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if args[0] == "verify" {
		v, err := audit.Verify(ctx, conn, t.Placement.Schema, t.ID)
		if err != nil {
			return err
		}
		return m.verdict(c.json, v, v.OK, fmt.Sprintf("%s: the audit log's %d entries verify", t.Slug, v.Entries),
			fmt.Sprintf("%s: TAMPERED at entry %d: %s", t.Slug, v.FirstBad, v.Reason),
			fmt.Errorf("the audit log of %s does not verify (first bad entry: %d)", t.Slug, v.FirstBad))
	}
	entries, next, err := audit.List(ctx, conn, t.Placement.Schema, t.ID, &opts)
	if err != nil {
		return err
	}
	return writePage(m, c.json, "entries", entries, next, "SEQ\tAT\tACTOR\tIP\tREQUEST\tOP\tTABLE\tROW\tCHANGES", func(e audit.Entry) string {
		return fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", e.Seq, e.At.UTC().Format(time.RFC3339), e.Actor, e.ClientIP,
			e.RequestID, e.Op, e.Table, e.RowKey, e.Changes)
	})
}

// controlAudit lists or verifies the control plane's log, of one tenant when
// slug is set.
func (m *Main) controlAudit(ctx context.Context, p *platform.Platform, cmd, slug string, opts *catalog.EventOpts, asJSON bool) error {
	if cmd == "verify" {
		v, err := p.Catalog.VerifyEvents(ctx)
		if err != nil {
			return err
		}
		return m.verdict(asJSON, v, v.OK, fmt.Sprintf("control plane: the log's %d events verify", v.Events),
			fmt.Sprintf("control plane: TAMPERED at event %d: %s", v.FirstBad, v.Reason),
			fmt.Errorf("the control plane's log does not verify (first bad event: %d)", v.FirstBad))
	}
	if slug != "" {
		t, err := p.Catalog.TenantBySlug(ctx, slug)
		if err != nil {
			return err
		}
		opts.TenantID = t.ID
	}
	events, next, err := p.Catalog.Events(ctx, opts)
	if err != nil {
		return err
	}
	return writePage(m, asJSON, "events", events, next, "SEQ\tAT\tOPERATOR\tIP\tKIND\tTENANT\tDETAILS", func(e catalog.Event) string {
		return fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%s", e.Seq, e.At.UTC().Format(time.RFC3339), e.Operator, e.ClientIP,
			e.Kind, e.TenantSlug, e.Details)
	})
}

// verdict prints the result v of a verification, as JSON or as the line for
// ok or not, and returns failure unless ok.
func (m *Main) verdict(asJSON bool, v any, ok bool, okLine, badLine string, failure error) error {
	if asJSON {
		if err := writeJSON(m.Stdout, v); err != nil {
			return err
		}
	} else if ok {
		fmt.Fprintln(m.Stdout, okLine)
	} else {
		fmt.Fprintln(m.Stdout, badLine)
	}
	if !ok {
		return failure
	}
	return nil
}

// writePage prints one page of a log: as JSON, {name: items, "next": cursor};
// else as a table of header and one row per item, and the cursor of the next
// page if there is one.
func writePage[E any](m *Main, asJSON bool, name string, items []E, next int64, header string, row func(E) string) error {
	if asJSON {
		page := map[string]any{name: items}
		if next != 0 {
			page["next"] = next
		}
		return writeJSON(m.Stdout, page)
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, it := range items {
		fmt.Fprintln(w, row(it))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if next != 0 {
		fmt.Fprintf(m.Stdout, "more: --after %d\n", next)
	}
	return nil
}
