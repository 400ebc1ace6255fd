package platform

import (
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
