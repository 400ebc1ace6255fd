package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
)

// APIOperation is the record of a long operation that one node's control API
// runs in the background (a move, a purge), kept in the catalog so that every
// node can answer for it. Doc is the resource as the API shows it; the
// catalog does not read it.
type APIOperation struct {
	ID      string
	Node    string // which process runs it
	Running bool
	Doc     json.RawMessage
	// HeartbeatAt is when its node last saved it, by the catalog's clock;
	// Age is how long ago that was when it was read.
	HeartbeatAt time.Time
	Age         time.Duration
}

// apiOperationsKept is how long finished operations are kept.
const apiOperationsKept = 30 * 24 * time.Hour

// SaveAPIOperation records op, or its new state, and refreshes its
// heartbeat. Recording a new one also forgets operations finished more than
// 30 days ago.
func (c *Catalog) SaveAPIOperation(ctx context.Context, op *APIOperation) error {
	tag, err := c.pool.Exec(ctx, `INSERT INTO catalog.api_operations (id, node, running, doc) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET running = EXCLUDED.running, doc = EXCLUDED.doc, heartbeat_at = now()
		WHERE catalog.api_operations.node = EXCLUDED.node`, op.ID, op.Node, op.Running, op.Doc)
	if err != nil {
		return dbError("save operation %s: %w", op.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return tenancy.Errorf(tenancy.CodeConflict, "operation %s belongs to another node", op.ID)
	}
	if !op.Running {
		return nil
	}
	if _, err := c.pool.Exec(ctx, `DELETE FROM catalog.api_operations WHERE NOT running AND created_at < now() - $1::interval`, apiOperationsKept); err != nil {
		return dbError("forget old operations: %w", err)
	}
	return nil
}

const apiOperationColumns = `id, node, running, doc, heartbeat_at, now() - heartbeat_at`

func scanAPIOperation(row pgx.Row) (*APIOperation, error) {
	var op APIOperation
	err := row.Scan(&op.ID, &op.Node, &op.Running, &op.Doc, &op.HeartbeatAt, &op.Age)
	return &op, err
}

// APIOperationByID returns the operation with the given id; CodeNotFound if
// there is none.
func (c *Catalog) APIOperationByID(ctx context.Context, id string) (*APIOperation, error) {
	op, err := scanAPIOperation(c.pool.QueryRow(ctx, `SELECT `+apiOperationColumns+` FROM catalog.api_operations WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "no operation %q", id)
	}
	if err != nil {
		return nil, dbError("read operation %s: %w", id, err)
	}
	return op, nil
}

// APIOperations returns the newest operations, at most limit.
func (c *Catalog) APIOperations(ctx context.Context, limit int) ([]*APIOperation, error) {
	rows, err := c.pool.Query(ctx, `SELECT `+apiOperationColumns+` FROM catalog.api_operations ORDER BY created_at DESC, id LIMIT $1`, limit)
	if err != nil {
		return nil, dbError("list operations: %w", err)
	}
	ops, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*APIOperation, error) { return scanAPIOperation(r) })
	if err != nil {
		return nil, dbError("list operations: %w", err)
	}
	return ops, nil
}
