package cli

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/move"
)

// tenantsCommands are the tenants subcommands written outside tenants.go.
var tenantsCommands = map[string]func(*Main, context.Context, []string) error{
	"move":   (*Main).runTenantsMove,
	"export": (*Main).runTenantsExport,
	"import": (*Main).runTenantsImport,
	"kept":   (*Main).runTenantsKept,
	"limits": (*Main).runTenantsLimits, // see plans.go
}

// runTenantsKept lists, or with --drop removes, the copies of a tenant that
// moves with --keep-source left: tenancy tenants kept SLUG [--drop]
// [--older-than D]. Without a slug, --drop --older-than D sweeps every
// tenant: a retention period for kept copies, run from cron.
func (m *Main) runTenantsKept(ctx context.Context, args []string) error {
	const use = "tenants kept SLUG [--drop [--older-than D]] [--json], or tenants kept --drop --older-than D (every tenant)"
	var c common
	var drop bool
	var older time.Duration
	fs := m.flags("tenants kept", &c)
	fs.BoolVar(&drop, "drop", false, "remove them")
	fs.DurationVar(&older, "older-than", 0, "with --drop: only those kept longer than this, e.g. 720h")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	sweep := len(pos) == 0
	if len(pos) > 1 || (sweep && (!drop || older <= 0)) || (older != 0 && !drop) || older < 0 {
		return m.usageError(use)
	}
	var slugs []string
	if !sweep {
		if err := tenancy.ValidateSlug(pos[0]); err != nil {
			return err
		}
		slugs = pos
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	if sweep {
		if slugs, err = p.Mover.TenantsWithKept(ctx); err != nil {
			return err
		}
	}
	kept := []move.Kept{}
	for _, slug := range slugs {
		var k []move.Kept
		if drop {
			k, err = p.Mover.DropKept(ctx, slug, older)
		} else {
			k, err = p.Mover.KeptSources(ctx, slug)
		}
		kept = append(kept, k...)
		if err != nil {
			return err
		}
	}
	if c.json {
		return writeJSON(m.Stdout, kept)
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MOVE\tMODEL\tPLACEMENT\tMOVED AT")
	for _, k := range kept {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", k.Move, k.Model, k.Placement, k.MovedAt.UTC().Format(time.RFC3339))
	}
	if drop {
		fmt.Fprintf(w, "%d kept copies removed\n", len(kept))
	}
	return w.Flush()
}

const moveUsage = "tenants move SLUG --to shared|schema|database | --tier TIER [--server NAME] [--keep-source] [--json]"

// runTenantsMove moves one tenant: tenancy tenants move SLUG --to MODEL.
func (m *Main) runTenantsMove(ctx context.Context, args []string) error {
	var c common
	var to, tier, server string
	var keep bool
	fs := m.flags("tenants move", &c)
	fs.StringVar(&to, "to", "", "the destination's isolation model: shared, schema or database")
	fs.StringVar(&tier, "tier", "", "set the tenant's tier and move it to that tier's model (free: shared, pro: schema, enterprise: database)")
	fs.StringVar(&server, "server", "", "the destination server (default: the tenant's)")
	fs.BoolVar(&keep, "keep-source", false, "keep the source's copy, marked moved away, instead of removing it")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (to == "") == (tier == "") {
		return m.usageError(moveUsage)
	}
	if err := tenancy.ValidateSlug(pos[0]); err != nil {
		return err
	}
	var model tenancy.Model
	if tier != "" {
		err = tenancy.ValidateName("tier", tier)
	} else {
		model, err = tenancy.ParseModel(to)
	}
	if err != nil {
		return err
	}
	if server != "" {
		if err := tenancy.ValidateName("server name", server); err != nil {
			return err
		}
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	opts := &move.Opts{To: model, Server: server, KeepSource: keep, Progress: m.moveProgress()}
	var res *move.Result
	if tier != "" {
		var t *tenancy.Tenant
		if t, res, err = p.Mover.ChangeTier(ctx, pos[0], tenancy.Tier(tier), nil, opts); err != nil {
			return err
		}
		if res == nil { // the tier's model is the tenant's already
			return m.printTenants(c.json, t)
		}
	} else if res, err = p.Mover.Move(ctx, pos[0], opts); err != nil {
		return err
	}
	if c.json {
		return writeJSON(m.Stdout, res)
	}
	return m.printMoves(res)
}

// moveProgress prints a move's steps on stderr.
func (m *Main) moveProgress() func(move.Progress) {
	return func(p move.Progress) {
		if p.Table != "" {
			fmt.Fprintf(m.Stderr, "  %s: copied %s (%d rows so far)\n", p.Slug, p.Table, p.Rows)
			return
		}
		fmt.Fprintf(m.Stderr, "  %s: %s\n", p.Slug, p.Step)
	}
}

func (m *Main) printMoves(rs ...*move.Result) error {
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SLUG\tFROM\tTO\tSTATE\tROWS\tMB\tCOPY\tPAUSE")
	for _, r := range rs {
		slug := ""
		if r.Tenant != nil {
			slug = r.Tenant.Slug
		}
		fmt.Fprintf(w, "%s\t%s %s\t%s %s\t%s\t%d\t%.1f\t%s\t%s\n", slug, r.FromModel, r.From, r.ToModel, r.To, r.State,
			r.Rows, float64(r.Bytes)/1e6, r.Copy.Round(time.Millisecond), r.Pause.Round(time.Millisecond))
	}
	return w.Flush()
}

// drained is one tenant's outcome in a drain.
type drained struct {
	Slug   string       `json:"slug"`
	Result *move.Result `json:"result,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// runServersDrain moves every tenant off a server, one at a time, each to
// the named server or else to the other server with the most free capacity.
func (m *Main) runServersDrain(ctx context.Context, args []string) error {
	var c common
	var to string
	fs := m.flags("servers drain", &c)
	fs.StringVar(&to, "to", "", "the server to move the tenants to (default: the least loaded other server, for each tenant)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return m.usageError("servers drain NAME [--to NAME] [--json]")
	}
	for _, n := range append(pos, to) {
		if n != "" {
			if err := tenancy.ValidateName("server name", n); err != nil {
				return err
			}
		}
	}
	if to == pos[0] {
		return tenancy.Errorf(tenancy.CodeInvalid, "cannot drain server %q onto itself", to)
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	if _, err := p.Catalog.Server(ctx, pos[0]); err != nil {
		return err
	}
	if to != "" {
		if _, err := p.Catalog.Server(ctx, to); err != nil {
			return err
		}
	}
	tenants, err := p.Catalog.Tenants(ctx, &catalog.ListOpts{Server: pos[0]})
	if err != nil {
		return err
	}
	var out []drained
	failed := 0
	for i, t := range tenants {
		d := drained{Slug: t.Slug}
		dest := to
		if dest == "" {
			if dest, err = leastLoaded(ctx, p.Catalog, pos[0]); err != nil {
				return err
			}
		}
		fmt.Fprintf(m.Stderr, "[%d/%d] %s: %s tenant, to server %s\n", i+1, len(tenants), t.Slug, t.Model, dest)
		d.Result, err = p.Mover.Move(ctx, t.Slug, &move.Opts{To: t.Model, Server: dest, Progress: m.moveProgress()})
		if err != nil {
			failed++
			d.Error = err.Error()
			fmt.Fprintf(m.Stderr, "[%d/%d] %s: not moved: %v\n", i+1, len(tenants), t.Slug, err)
		} else {
			fmt.Fprintf(m.Stderr, "[%d/%d] %s: moved, %d rows, writes paused %s\n", i+1, len(tenants), t.Slug,
				d.Result.Rows, d.Result.Pause.Round(time.Millisecond))
		}
		out = append(out, d)
	}
	if c.json {
		if err := writeJSON(m.Stdout, out); err != nil {
			return err
		}
	} else {
		var rs []*move.Result
		for _, d := range out {
			if d.Result != nil {
				rs = append(rs, d.Result)
			}
		}
		if err := m.printMoves(rs...); err != nil {
			return err
		}
	}
	if failed > 0 {
		return tenancy.Errorf(tenancy.CodeConflict, "server %q: %d of %d tenants were not moved (see above); run the drain again", pos[0], failed, len(tenants))
	}
	return nil
}

// leastLoaded is the server other than not with the most free capacity.
func leastLoaded(ctx context.Context, cat *catalog.Catalog, not string) (string, error) {
	servers, err := cat.Servers(ctx)
	if err != nil {
		return "", err
	}
	tenants, err := cat.Tenants(ctx, nil)
	if err != nil {
		return "", err
	}
	free := map[string]int{}
	for _, s := range servers {
		free[s.Name] = s.Capacity
	}
	for _, t := range tenants {
		free[t.Placement.Server]--
	}
	best := ""
	for _, s := range servers {
		if s.Name != not && (best == "" || free[s.Name] > free[best]) {
			best = s.Name
		}
	}
	if best == "" {
		return "", tenancy.Errorf(tenancy.CodeConflict, "server %q is the only server: add another before draining it", not)
	}
	return best, nil
}

// runTenantsExport writes a tenant's archive: tenancy tenants export SLUG.
func (m *Main) runTenantsExport(ctx context.Context, args []string) error {
	var c common
	var out string
	fs := m.flags("tenants export", &c)
	fs.StringVar(&out, "out", "", "the archive file to write (default: standard output)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return m.usageError("tenants export SLUG [--out FILE]")
	}
	if err := tenancy.ValidateSlug(pos[0]); err != nil {
		return err
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	w := m.Stdout
	var f *os.File
	if out != "" && out != "-" {
		if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return tenancy.Errorf(tenancy.CodeInvalid, "--out: %w", err)
		}
		w = f
	}
	man, err := p.Mover.Export(ctx, pos[0], w)
	if f != nil {
		if cErr := f.Close(); err == nil {
			err = cErr
		}
		if err != nil {
			os.Remove(out)
		}
	}
	if err != nil {
		return err
	}
	var rows int64
	for _, t := range man.Tables {
		rows += t.Rows
	}
	fmt.Fprintf(m.Stderr, "exported %s: %d tables, %d rows, data model version %d\n", pos[0], len(man.Tables), rows, man.DataModelVersion)
	return nil
}

// runTenantsImport restores an archive: tenancy tenants import FILE.
func (m *Main) runTenantsImport(ctx context.Context, args []string) error {
	var c common
	var o move.ImportOpts
	var slug, model, server, tier string
	fs := m.flags("tenants import", &c)
	fs.StringVar(&slug, "slug", "", "the tenant's slug here (default: the archive's)")
	fs.StringVar(&model, "model", "", "the isolation model (default: the archive's)")
	fs.StringVar(&server, "server", "", "the server (default: the first by name)")
	fs.StringVar(&tier, "tier", "", "the tier (default: the archive's)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return m.usageError("tenants import FILE [--slug S] [--model M] [--server S] [--tier T] [--json]")
	}
	if model != "" {
		if o.Model, err = tenancy.ParseModel(model); err != nil {
			return err
		}
	}
	o.Slug, o.Server, o.Tier = slug, server, tenancy.Tier(tier)
	f, err := os.Open(pos[0])
	if err != nil {
		return tenancy.Errorf(tenancy.CodeInvalid, "archive: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	t, err := p.Mover.Import(ctx, f, st.Size(), &o)
	if err != nil {
		return err
	}
	return m.printTenants(c.json, t)
}
