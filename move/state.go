package move

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
)

// State is where a move is in its state machine, as recorded in the catalog
// (catalog.moves).
type State string

// The states of a move. A move goes Started → Prepared → Copied → Switched
// → Done; before Switched it may end RolledBack instead.
const (
	// Started: the tenant is marked moving and the destination is chosen.
	Started State = "started"
	// Prepared: the destination's storage exists, marked as not serving the tenant.
	Prepared State = "prepared"
	// Copied: the bulk copy is committed at the destination and verified.
	Copied State = "copied"
	// Switched: the catalog places the tenant at the destination; the source
	// is marked moved away. Only the source's removal is left.
	Switched State = "switched"
	// Done: the move is finished (the source removed, unless kept).
	Done State = "done"
	// RolledBack: the move was abandoned before the switch; the tenant stays
	// at the source, and what the move created at the destination is removed.
	RolledBack State = "rolled_back"
)

// record is a move's row in catalog.moves.
type record struct {
	ID         int64
	Tenant     uuid.UUID
	State      State
	From, To   tenancy.Placement
	FromModel  tenancy.Model
	ToModel    tenancy.Model
	DstCreated bool
	KeepSource bool
	CopiedSeq  *int64
	Rows       int64
	Bytes      int64
	Pause      *float64
	Error      string
	CreatedAt  time.Time
}

const recordColumns = `id, tenant_id, state, src_model, src_server, src_database, src_schema,
	dst_model, dst_server, dst_database, dst_schema, dst_created, keep_source, copied_seq,
	rows_copied, bytes_copied, pause_ms, error, created_at`

func scanRecord(row pgx.Row) (*record, error) {
	var r record
	err := row.Scan(&r.ID, &r.Tenant, &r.State, &r.FromModel, &r.From.Server, &r.From.Database, &r.From.Schema,
		&r.ToModel, &r.To.Server, &r.To.Database, &r.To.Schema, &r.DstCreated, &r.KeepSource, &r.CopiedSeq,
		&r.Rows, &r.Bytes, &r.Pause, &r.Error, &r.CreatedAt)
	return &r, err
}

// open returns the tenant's unfinished move, or nil.
func (m *Mover) open(ctx context.Context, tenant uuid.UUID) (*record, error) {
	r, err := scanRecord(m.pool().QueryRow(ctx, `SELECT `+recordColumns+` FROM catalog.moves
		WHERE tenant_id = $1 AND state NOT IN ('done', 'rolled_back')`, tenant))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the tenant's moves: %w", err)
	}
	return r, nil
}

// start records a new move of t to (model, to) and marks t moving, in one
// catalog transaction. It fails with CodeConflict when t changed since it was
// read, is not active, or has another move under way.
func (m *Mover) start(ctx context.Context, t *tenancy.Tenant, model tenancy.Model, to tenancy.Placement, keep bool) (*record, error) {
	var r *record
	err := pgx.BeginFunc(ctx, m.pool(), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE catalog.tenants SET status = 'moving'
			WHERE id = $1 AND version = $2 AND status = 'active'`, t.ID, t.Version)
		if err != nil {
			return fmt.Errorf("mark tenant %q moving: %w", t.Slug, err)
		}
		if tag.RowsAffected() == 0 {
			return tenancy.Errorf(tenancy.CodeConflict, "tenant %q changed while its move was starting; try again", t.Slug)
		}
		r, err = scanRecord(tx.QueryRow(ctx, `INSERT INTO catalog.moves (tenant_id, state, src_model, src_server, src_database, src_schema,
				dst_model, dst_server, dst_database, dst_schema, keep_source)
			VALUES ($1, 'started', $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING `+recordColumns,
			t.ID, t.Model, t.Placement.Server, t.Placement.Database, t.Placement.Schema,
			model, to.Server, to.Database, to.Schema, keep))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return tenancy.Errorf(tenancy.CodeConflict, "tenant %q is already being moved", t.Slug)
		}
		if err != nil {
			return fmt.Errorf("record the move of tenant %q: %w", t.Slug, err)
		}
		return nil
	})
	return r, err
}

// advance moves r from its state to next, with the columns in set
// ("name = $2, …" over args), and fails unless r was in its state.
func (m *Mover) advance(ctx context.Context, r *record, next State, set string, args ...any) error {
	sql := `UPDATE catalog.moves SET state = $1, updated_at = now()`
	if set != "" {
		sql += ", " + set
	}
	all := append([]any{next}, args...)
	all = append(all, r.ID, r.State)
	sql += fmt.Sprintf(" WHERE id = $%d AND state = $%d", len(all)-1, len(all))
	tag, err := m.pool().Exec(ctx, sql, all...)
	if err != nil {
		return fmt.Errorf("record move %d as %s: %w", r.ID, next, err)
	}
	if tag.RowsAffected() == 0 {
		return tenancy.Errorf(tenancy.CodeConflict, "move %d is no longer %s", r.ID, r.State)
	}
	r.State = next
	return nil
}

// switchPlacement places the tenant at r's destination, active, records r as
// switched and the move in the control plane's log, in one catalog
// transaction: every node's cache hears of it
// (catalog.Cache) when it commits. It fails with CodeConflict, changing
// nothing, unless the tenant is still moving from r's source.
func (m *Mover) switchPlacement(ctx context.Context, r *record, slug string, pause time.Duration) error {
	return pgx.BeginFunc(ctx, m.pool(), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE catalog.tenants SET model = $2, server = $3, database = $4, schema = $5, status = 'active'
			WHERE id = $1 AND status = 'moving' AND model = $6 AND server = $7 AND database = $8 AND schema = $9`,
			r.Tenant, r.ToModel, r.To.Server, r.To.Database, r.To.Schema,
			r.FromModel, r.From.Server, r.From.Database, r.From.Schema)
		if err != nil {
			return fmt.Errorf("switch the placement: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return tenancy.Errorf(tenancy.CodeConflict, "the tenant's catalog record changed during its move")
		}
		tag, err = tx.Exec(ctx, `UPDATE catalog.moves SET state = 'switched', pause_ms = $2, updated_at = now()
			WHERE id = $1 AND state = 'copied'`, r.ID, float64(pause)/float64(time.Millisecond))
		if err != nil {
			return fmt.Errorf("record move %d as switched: %w", r.ID, err)
		}
		if tag.RowsAffected() == 0 {
			return tenancy.Errorf(tenancy.CodeConflict, "move %d is no longer copied", r.ID)
		}
		// The control plane's log records the move with the switch.
		return catalog.RecordEventTx(ctx, tx, &catalog.Event{Kind: catalog.EventMoved, TenantID: r.Tenant, TenantSlug: slug},
			map[string]any{"move": r.ID, "from_model": r.FromModel, "from": r.From, "to_model": r.ToModel, "to": r.To,
				"pause_ms": pause.Milliseconds()})
	})
}

// switchOutcome reads, after switchPlacement failed, whether its transaction
// committed: Switched or Copied, or "" when the catalog cannot tell (within
// a few seconds). FOR UPDATE waits for the switch's transaction, if the
// catalog still runs it, to end, so the answer is final.
func (m *Mover) switchOutcome(ctx context.Context, r *record) State {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		var st State
		err := pgx.BeginFunc(ctx, m.pool(), func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT state FROM catalog.moves WHERE id = $1 FOR UPDATE`, r.ID).Scan(&st)
		})
		if err == nil {
			return st
		}
		select {
		case <-ctx.Done():
			m.cfg.Logger.WarnContext(ctx, "read the outcome of a move's switch", "move", r.ID, "err", err)
			return ""
		case <-time.After(wait):
		}
	}
}

// abandon marks r rolled back with the reason, and the tenant active at its
// source again, in one catalog transaction.
func (m *Mover) abandon(ctx context.Context, r *record, reason string) error {
	return pgx.BeginFunc(ctx, m.pool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE catalog.tenants SET status = 'active'
			WHERE id = $1 AND status = 'moving' AND server = $2 AND database = $3 AND schema = $4`,
			r.Tenant, r.From.Server, r.From.Database, r.From.Schema); err != nil {
			return fmt.Errorf("mark the tenant active again: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE catalog.moves SET state = 'rolled_back', error = $2, updated_at = now()
			WHERE id = $1 AND state NOT IN ('switched', 'done')`, r.ID, reason); err != nil {
			return fmt.Errorf("record move %d as rolled back: %w", r.ID, err)
		}
		r.State = RolledBack
		return nil
	})
}
