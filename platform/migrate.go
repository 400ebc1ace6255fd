package platform

import (
	"context"
	"errors"

	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/provision"
)

// Migrator returns a fleet migrator for the platform's data model; cfg may set
// its bounds (nil: defaults). The catalog, model and roles come from the
// platform.
func (p *Platform) Migrator(cfg *migrate.Config) (*migrate.Migrator, error) {
	c := migrate.Config{}
	if cfg != nil {
		c = *cfg
	}
	c.Catalog, c.Model, c.AppRole, c.SharedSchema = p.Catalog, p.Model, p.appRole, provision.SharedSchema
	return migrate.New(c)
}

// MigrateUp runs a fleet migration (see migrate.Migrator.Up) and records it
// in the control-plane log (a "migrated" event with the counts and the
// model's latest version, with the operator and client IP that ctx carries),
// whether it succeeded or some targets failed. cfg and opts may be nil.
func (p *Platform) MigrateUp(ctx context.Context, cfg *migrate.Config, opts *migrate.UpOpts) (*migrate.Report, error) {
	m, err := p.Migrator(cfg)
	if err != nil {
		return nil, err
	}
	rep, err := m.Up(ctx, opts)
	if rep == nil {
		return nil, err
	}
	details := map[string]any{"version": p.Model.Latest(), "migrated": rep.Migrated, "current": rep.Current,
		"failed": rep.Failed, "skipped": rep.Skipped, "elapsed_ms": rep.Elapsed.Milliseconds()}
	if opts != nil && (opts.Canary > 0 || opts.Group != "") {
		details["canary"], details["group"] = opts.Canary, opts.Group
	}
	if evErr := p.Catalog.RecordEvent(context.WithoutCancel(ctx), &catalog.Event{Kind: catalog.EventMigrated}, details); evErr != nil {
		return rep, errors.Join(err, evErr)
	}
	return rep, err
}
