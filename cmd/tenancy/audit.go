package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
)

// runAudit runs "tenancy audit list|verify --tenant SLUG".
func (m *Main) runAudit(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errUsage
	}
	var c common
	var slug, since, until string
	var opts audit.ListOpts
	fs := m.flags("audit "+args[0], &c)
	fs.StringVar(&slug, "tenant", "", "the tenant's slug")
	fs.StringVar(&since, "since", "", "entries at or after this time (RFC 3339)")
	fs.StringVar(&until, "until", "", "entries before this time (RFC 3339)")
	fs.StringVar(&opts.Actor, "actor", "", "only this actor, e.g. user:42")
	fs.StringVar(&opts.Table, "table", "", "only this table")
	fs.Int64Var(&opts.After, "after", 0, "cursor: the last sequence number of the previous page")
	fs.IntVar(&opts.Limit, "limit", 100, "page size, 1 to 1000")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 || (args[0] != "list" && args[0] != "verify") {
		return m.usageError("audit list|verify --tenant SLUG")
	}
	if err := tenancy.ValidateSlug(slug); err != nil {
		return err
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
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	t, err := p.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return err
	}
	s, err := p.Catalog.Server(ctx, t.Placement.Server)
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(s.DSN)
	if err != nil {
		return fmt.Errorf("server %q: %w", s.Name, err)
	}
	cfg.Database = t.Placement.Database
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
		if c.json {
			if err := writeJSON(m.Stdout, v); err != nil {
				return err
			}
		} else if v.OK {
			fmt.Fprintf(m.Stdout, "%s: the audit log's %d entries verify\n", t.Slug, v.Entries)
		} else {
			fmt.Fprintf(m.Stdout, "%s: TAMPERED at entry %d: %s\n", t.Slug, v.FirstBad, v.Reason)
		}
		if !v.OK {
			return fmt.Errorf("the audit log of %s does not verify (first bad entry: %d)", t.Slug, v.FirstBad)
		}
		return nil
	}
	entries, next, err := audit.List(ctx, conn, t.Placement.Schema, t.ID, &opts)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(m.Stdout, struct {
			Entries []audit.Entry `json:"entries"`
			Next    int64         `json:"next,omitempty"`
		}{entries, next})
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tAT\tACTOR\tIP\tREQUEST\tOP\tTABLE\tROW\tCHANGES")
	for _, e := range entries {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.UTC().Format(time.RFC3339), e.Actor, e.ClientIP,
			e.RequestID, e.Op, e.Table, e.RowKey, e.Changes)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if next != 0 {
		fmt.Fprintf(m.Stdout, "more: --after %d\n", next)
	}
	return nil
}
