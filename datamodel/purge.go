package datamodel

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// PurgeDeletedTx removes, from every tenant table of schema, the rows deleted
// (soft) before cutoff, and returns how many. Each removal is logged as a
// purge in the audit log. tx must be an administrative transaction (the
// tables' owner or a superuser): the application role can only ever mark
// rows deleted. Rows deleted at or after cutoff are kept.
func PurgeDeletedTx(ctx context.Context, tx pgx.Tx, schema string, cutoff time.Time) (int64, error) {
	if _, err := tx.Exec(ctx, `SELECT set_config('tenancy.purge', 'rows', true), set_config('tenancy.purge_before', $1, true)`,
		cutoff.UTC().Format(time.RFC3339Nano)); err != nil {
		return 0, fmt.Errorf("start purge: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'deleted_at' AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
		  AND EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = 'tenancy_soft_delete')
		ORDER BY c.relname`, schema)
	if err != nil {
		return 0, fmt.Errorf("find tenant tables in %s: %w", schema, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("find tenant tables in %s: %w", schema, err)
	}
	var total int64
	// Rows may reference each other across tables: delete until nothing
	// more goes, so that the order of the tables does not matter.
	for {
		var round int64
		for _, t := range tables {
			tag, err := tx.Exec(ctx, `SAVEPOINT tenancy_purge`)
			if err != nil {
				return total, err
			}
			tag, err = tx.Exec(ctx, `DELETE FROM `+dataplane.Ident(schema, t)+` WHERE deleted_at < $1`, cutoff)
			if err != nil {
				// A row still referenced by a row not yet purged: later round.
				if _, rbErr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT tenancy_purge`); rbErr != nil {
					return total, rbErr
				}
				continue
			}
			round += tag.RowsAffected()
		}
		total += round
		if round == 0 {
			return total, nil
		}
	}
}
