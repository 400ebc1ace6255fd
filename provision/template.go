package provision

import (
	"context"

	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// createDatabase creates the tenant's database.
func (p *Provisioner) createDatabase(ctx context.Context, s *session) error {
	conn, err := s.conn(ctx, "")
	if err != nil {
		return err
	}
	return dataplane.CreateDatabase(ctx, conn, s.t.Placement.Database, "", p.cfg.AppRole)
}
