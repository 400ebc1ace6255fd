package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ServerLoads returns how many tenants each server holds (tenants of every
// status but purged, which hold no storage), by server name. Servers without
// tenants are absent.
func (c *Catalog) ServerLoads(ctx context.Context) (map[string]int, error) {
	rows, err := c.pool.Query(ctx, `SELECT server, count(*) FROM catalog.tenants WHERE status <> 'purged' GROUP BY server`)
	if err != nil {
		return nil, fmt.Errorf("count tenants per server: %w", err)
	}
	loads := map[string]int{}
	var name string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		loads[name] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count tenants per server: %w", err)
	}
	return loads, nil
}
