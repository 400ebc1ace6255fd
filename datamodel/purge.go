package datamodel

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
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
	tables, err := tablesWith(ctx, tx, schema, `JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'deleted_at' AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
		  AND EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = 'tenancy_soft_delete')`)
	if err != nil {
		return 0, err
	}
	return deleteInRounds(ctx, tx, schema, tables, `deleted_at < $1`, cutoff)
}

// PurgeTenantTx removes every row of the tenant from every tenant table of
// schema (the shared tables), its audit log included, and returns how many.
// It is the purge of a whole tenant in the shared model: the removal is not
// logged in the tenant's audit log, which goes too; the catalog records it. tx
// must be an administrative transaction, as for PurgeDeletedTx.
func PurgeTenantTx(ctx context.Context, tx pgx.Tx, schema string, tenant uuid.UUID) (int64, error) {
	if _, err := tx.Exec(ctx, `SELECT set_config('tenancy.purge', 'tenant', true)`); err != nil {
		return 0, fmt.Errorf("start purge: %w", err)
	}
	tables, err := tablesWith(ctx, tx, schema, `JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`)
	if err != nil {
		return 0, err
	}
	n, err := deleteInRounds(ctx, tx, schema, tables, `tenant_id = $1`, tenant)
	if err != nil {
		return n, err
	}
	// A row that would not go (a failing trigger, a reference from outside
	// the tenant tables) must fail the purge, not be left silently.
	for _, t := range tables {
		if _, err := tx.Exec(ctx, `DELETE FROM `+dataplane.Ident(schema, t)+` WHERE tenant_id = $1`, tenant); err != nil {
			return n, fmt.Errorf("purge table %s: %w", t, err)
		}
	}
	return n, nil
}

// tablesWith lists the tables of schema that the join and condition select.
func tablesWith(ctx context.Context, tx pgx.Tx, schema, joinWhere string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace `+joinWhere+`
		ORDER BY c.relname`, schema)
	if err != nil {
		return nil, fmt.Errorf("find tenant tables in %s: %w", schema, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find tenant tables in %s: %w", schema, err)
	}
	return tables, nil
}

// deleteInRounds deletes the rows matching where (with $1 = arg) from each of
// the tables. Rows may reference each other across tables: it deletes until
// nothing more goes, so that the order of the tables does not matter.
func deleteInRounds(ctx context.Context, tx pgx.Tx, schema string, tables []string, where string, arg any) (int64, error) {
	var total int64
	for {
		var round int64
		for _, t := range tables {
			tag, err := tx.Exec(ctx, `SAVEPOINT tenancy_purge`)
			if err != nil {
				return total, err
			}
			tag, err = tx.Exec(ctx, `DELETE FROM `+dataplane.Ident(schema, t)+` WHERE `+where, arg)
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
