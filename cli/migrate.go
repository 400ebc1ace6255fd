package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/migrate"
)

// runMigrate runs "tenancy migrate up|status".
func (m *Main) runMigrate(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errUsage
	}
	var c common
	var opts migrate.UpOpts
	var cfg migrate.Config
	fs := m.flags("migrate "+args[0], &c)
	fs.IntVar(&opts.Canary, "canary", 0, "migrate the first N targets first and stop at their first failure")
	fs.StringVar(&opts.Group, "group", "", "migrate this group first: server:NAME, model:MODEL, tier:TIER or tenants:SLUG,SLUG")
	fs.BoolVar(&opts.FailFast, "fail-fast", false, "stop at the first failing target")
	fs.IntVar(&cfg.Parallel, "parallel", 0, "targets migrating at once (default: twice the CPUs, at least 4)")
	fs.IntVar(&cfg.PerServer, "per-server", 0, "targets of one server migrating at once (default: --parallel)")
	fs.DurationVar(&cfg.LockTimeout, "lock-timeout", 0, "fail a target that waits longer than this for a table lock (0: wait)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return m.usageError("migrate up|status [flags]")
	}
	if cfg.Parallel < 0 || cfg.PerServer < 0 || cfg.LockTimeout < 0 || opts.Canary < 0 {
		return tenancy.Errorf(tenancy.CodeInvalid, "--parallel, --per-server, --lock-timeout and --canary must not be negative")
	}
	if args[0] != "up" && args[0] != "status" {
		return m.usageError("migrate up|status")
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	switch args[0] {
	case "up":
		if !c.json {
			opts.Progress = m.progress()
		}
		rep, err := p.MigrateUp(ctx, &cfg, &opts)
		if rep != nil {
			if c.json {
				if jErr := writeJSON(m.Stdout, rep); jErr != nil {
					return jErr
				}
			} else {
				fmt.Fprintf(m.Stdout, "%d migrated, %d already current, %d failed, %d skipped in %s\n",
					rep.Migrated, rep.Current, rep.Failed, rep.Skipped, rep.Elapsed.Round(time.Millisecond))
			}
		}
		return err
	default:
		mg, err := p.Migrator(&cfg)
		if err != nil {
			return err
		}
		st, err := mg.Status(ctx)
		if err != nil {
			return err
		}
		if c.json {
			return writeJSON(m.Stdout, struct {
				Latest  int                    `json:"latest"`
				Targets []migrate.TargetStatus `json:"targets"`
			}{p.Model.Latest(), st})
		}
		return m.printStatus(p.Model.Latest(), st)
	}
}

// progress prints one line per target as Up goes.
func (m *Main) progress() func(migrate.Result) {
	return func(r migrate.Result) {
		line := fmt.Sprintf("%-8s %-24s %s/%s/%s", r.Outcome, r.Target, r.Target.Server, r.Target.Database, r.Target.Schema)
		switch r.Outcome {
		case migrate.Migrated:
			line += fmt.Sprintf("  %d → %d (%d applied, %s)", r.From, r.To, r.Applied, r.Elapsed.Round(time.Millisecond))
		case migrate.Failed:
			line += "  " + r.Error
		case migrate.Skipped:
			line += "  " + r.Reason
		}
		fmt.Fprintln(m.Stderr, line)
	}
}

func (m *Main) printStatus(latest int, st []migrate.TargetStatus) error {
	fmt.Fprintf(m.Stdout, "latest version: %d\n", latest)
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TARGET\tKIND\tPLACEMENT\tVERSION\tSTATE\tPENDING\tDETAIL")
	bad := 0
	for _, s := range st {
		detail := s.Reason
		if s.Error != "" {
			detail = s.Error
		}
		if len(s.State.Drift) > 0 {
			detail = "changed after applied: " + ints(s.State.Drift)
		}
		if len(s.State.Ahead) > 0 {
			detail = "unknown to this code: " + ints(s.State.Ahead)
		}
		if s.Summary != "current" {
			bad++
		}
		fmt.Fprintf(w, "%s\t%s\t%s/%s/%s\t%d\t%s\t%s\t%s\n", s.Target, s.Target.Kind, s.Target.Server, s.Target.Database,
			s.Target.Schema, s.State.Version, s.Summary, ints(s.State.Pending), detail)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "%d targets, %d not current\n", len(st), bad)
	return nil
}

func ints(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, ",")
}
