package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
)

// limitFlags are the flags of a plan's or a tenant's limits; which were
// given is read with flagSet.
type limitFlags struct {
	rps     float64
	burst   int
	maxTx   int
	timeout time.Duration
	dbTime  float64
}

func (lf *limitFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&lf.rps, "rps", 0, "requests per second (0: no rate limit; with --burst)")
	fs.IntVar(&lf.burst, "burst", 0, "requests at once above the rate")
	fs.IntVar(&lf.maxTx, "max-tx", 0, "concurrent database transactions per app node (0: no cap)")
	fs.DurationVar(&lf.timeout, "statement-timeout", 0, "statement timeout, e.g. 5s (0: the server's)")
	fs.Float64Var(&lf.dbTime, "db-time", 0, "database time budget, seconds per second per app node (0: none)")
}

// overrides returns the flags given, as overrides.
func (lf *limitFlags) overrides(fs *flag.FlagSet) catalog.Overrides {
	var o catalog.Overrides
	if flagSet(fs, "rps") {
		o.RPS = &lf.rps
	}
	if flagSet(fs, "burst") {
		o.Burst = &lf.burst
	}
	if flagSet(fs, "max-tx") {
		o.MaxConcurrentTx = &lf.maxTx
	}
	if flagSet(fs, "statement-timeout") {
		o.StatementTimeout = &lf.timeout
	}
	if flagSet(fs, "db-time") {
		o.DBTime = &lf.dbTime
	}
	return o
}

// runPlans runs "tenancy plans list|set": each tier's limits. A change
// reaches every app node within moments, without a restart.
func (m *Main) runPlans(ctx context.Context, args []string) error {
	const use = "plans list [--json], plans set TIER [--rps N --burst N] [--max-tx N] [--statement-timeout D] [--db-time S] [--json]"
	if len(args) == 0 {
		return m.usageError(use)
	}
	var c common
	var lf limitFlags
	fs := m.flags("plans "+args[0], &c)
	lf.register(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	given := lf.overrides(fs)
	switch {
	case args[0] == "list" && len(pos) == 0 && given == (catalog.Overrides{}):
	case args[0] == "set" && len(pos) == 1:
		if err := tenancy.ValidateName("tier", pos[0]); err != nil {
			return err
		}
	default:
		return m.usageError(use)
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	if args[0] == "list" {
		plans, err := p.Catalog.Plans(ctx)
		if err != nil {
			return err
		}
		return m.printPlans(c.json, plans...)
	}
	plan := &catalog.Plan{Tier: tenancy.Tier(pos[0])}
	if cur, err := p.Catalog.Plan(ctx, plan.Tier); err == nil {
		plan.Limits = cur.Limits // the flags not given keep their values
	} else if tenancy.ErrorCode(err) != tenancy.CodeNotFound {
		return err
	}
	plan.Limits = given.Apply(plan.Limits)
	if err := p.Catalog.SetPlan(ctx, plan); err != nil {
		return err
	}
	return m.printPlans(c.json, plan)
}

func (m *Main) printPlans(asJSON bool, plans ...*catalog.Plan) error {
	if asJSON {
		return writeJSON(m.Stdout, plans)
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIER\tLIMITS")
	for _, pl := range plans {
		fmt.Fprintf(w, "%s\t%s\n", pl.Tier, pl.Limits)
	}
	return w.Flush()
}

// runTenantsLimits runs "tenancy tenants limits SLUG": the tenant's limits
// (its plan's with its overrides); with limit flags it overrides those
// fields, with --clear it drops its overrides.
func (m *Main) runTenantsLimits(ctx context.Context, args []string) error {
	const use = "tenants limits SLUG [--rps N --burst N] [--max-tx N] [--statement-timeout D] [--db-time S] [--clear] [--json]"
	var c common
	var lf limitFlags
	var clear bool
	fs := m.flags("tenants limits", &c)
	lf.register(fs)
	fs.BoolVar(&clear, "clear", false, "drop the tenant's overrides: its plan's limits apply")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	given := lf.overrides(fs)
	if len(pos) != 1 || (clear && given != (catalog.Overrides{})) {
		return m.usageError(use)
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
	o, err := p.Catalog.Overrides(ctx, t.ID)
	if err != nil {
		return err
	}
	if clear || given != (catalog.Overrides{}) {
		if clear {
			o = catalog.Overrides{}
		} else {
			o = o.Merge(given)
		}
		if err := p.Catalog.SetOverrides(ctx, t.ID, o); err != nil {
			return err
		}
	}
	l, err := p.Catalog.Limits(ctx, t)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(m.Stdout, struct {
			Tenant    string            `json:"tenant"`
			Tier      tenancy.Tier      `json:"tier"`
			Limits    tenancy.Limits    `json:"limits"`
			Overrides catalog.Overrides `json:"overrides"`
		}{t.Slug, t.Tier, l, o})
	}
	fmt.Fprintf(m.Stdout, "%s (tier %s): %s\n", t.Slug, t.Tier, l)
	return nil
}
