package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
)

// OpKind names what an operation does to its tenant.
type OpKind string

// The operations of the tenant lifecycle. Other packages may record kinds of
// their own (for example "move"): a kind is a lower-case word.
const (
	OpProvision OpKind = "provision"
	OpSuspend   OpKind = "suspend"
	OpResume    OpKind = "resume"
	OpDelete    OpKind = "delete"
	OpRestore   OpKind = "restore"
	OpPurge     OpKind = "purge"
)

// OpState is where an operation is.
type OpState string

const (
	// OpRunning: started and not finished. A process that died leaves its
	// operation running; another continues it or rolls it back.
	OpRunning OpState = "running"
	// OpFailed: a step failed and the operation stopped; it may be continued
	// or rolled back.
	OpFailed OpState = "failed"
	// OpDone: every step completed.
	OpDone OpState = "done"
	// OpRolledBack: undone; what it had made is removed.
	OpRolledBack OpState = "rolled_back"
)

// Open reports whether an operation in this state still needs to be
// continued or rolled back.
func (s OpState) Open() bool { return s == OpRunning || s == OpFailed }

// Operation is a multi-step change of one tenant, recorded as it goes.
type Operation struct {
	ID         uuid.UUID       `json:"id"`
	Kind       OpKind          `json:"kind"`
	TenantID   uuid.UUID       `json:"tenant_id"`
	TenantSlug string          `json:"tenant_slug"`
	State      OpState         `json:"state"`
	Steps      []string        `json:"steps"` // completed, in order
	Step       string          `json:"step"`  // started last, completed or not
	Params     json.RawMessage `json:"params,omitempty"`
	Error      string          `json:"error,omitempty"`
	Operator   string          `json:"operator,omitempty"`
	ClientIP   string          `json:"client_ip,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// Completed reports whether step is among the operation's completed steps.
func (o *Operation) Completed(step string) bool {
	for _, s := range o.Steps {
		if s == step {
			return true
		}
	}
	return false
}

// Started reports whether step was started (it may not have completed).
func (o *Operation) Started(step string) bool { return o.Step == step || o.Completed(step) }

const opColumns = `id, kind, tenant_id, tenant_slug, state, steps, step, params, error, operator, client_ip, started_at, updated_at, finished_at`

func scanOp(row pgx.Row) (*Operation, error) {
	var o Operation
	err := row.Scan(&o.ID, &o.Kind, &o.TenantID, &o.TenantSlug, &o.State, &o.Steps, &o.Step, &o.Params, &o.Error,
		&o.Operator, &o.ClientIP, &o.StartedAt, &o.UpdatedAt, &o.FinishedAt)
	return &o, err
}

// Tx runs fn in a catalog transaction, committed when fn returns nil.
func (c *Catalog) Tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, c.pool, fn)
}

// StartOperationTx records op, in tx, as running; its ID is generated when
// nil, and its operator and client IP come from ctx (tenancy.WithActor,
// tenancy.WithClient) when empty. It fails with CodeConflict when the tenant
// already has an open operation.
func StartOperationTx(ctx context.Context, tx pgx.Tx, op *Operation) error {
	if op.ID == uuid.Nil {
		op.ID = uuid.New()
	}
	if op.Operator == "" && op.ClientIP == "" {
		op.Operator, op.ClientIP = whoFrom(ctx)
	}
	if op.Params == nil {
		op.Params = json.RawMessage(`{}`)
	}
	op.State = OpRunning
	err := tx.QueryRow(ctx, `
		INSERT INTO catalog.operations (id, kind, tenant_id, tenant_slug, state, steps, step, params, operator, client_ip)
		VALUES ($1, $2, $3, $4, 'running', '{}', $5, $6, $7, $8)
		RETURNING steps, started_at, updated_at`,
		op.ID, op.Kind, op.TenantID, op.TenantSlug, op.Step, op.Params, op.Operator, op.ClientIP,
	).Scan(&op.Steps, &op.StartedAt, &op.UpdatedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "operations_open_idx" {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q has an unfinished operation: continue or roll it back first", op.TenantSlug)
	}
	if err != nil {
		return fmt.Errorf("record %s of tenant %q: %w", op.Kind, op.TenantSlug, err)
	}
	return nil
}

// StartStep records that op is starting step (and that it is running again,
// if it had failed).
func (c *Catalog) StartStep(ctx context.Context, op *Operation, step string) error {
	err := c.pool.QueryRow(ctx, `UPDATE catalog.operations SET step = $2, state = 'running', error = '', updated_at = now()
		WHERE id = $1 AND state IN ('running', 'failed') RETURNING updated_at`, op.ID, step).Scan(&op.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenancy.Errorf(tenancy.CodeConflict, "the %s of tenant %q is no longer open", op.Kind, op.TenantSlug)
	}
	if err != nil {
		return fmt.Errorf("record step %s of the %s of tenant %q: %w", step, op.Kind, op.TenantSlug, err)
	}
	op.Step, op.State, op.Error = step, OpRunning, ""
	return nil
}

// CompleteStep records that op completed step.
func (c *Catalog) CompleteStep(ctx context.Context, op *Operation, step string) error {
	err := c.pool.QueryRow(ctx, `UPDATE catalog.operations
		SET steps = CASE WHEN $2 = ANY(steps) THEN steps ELSE steps || $2 END, step = $2, updated_at = now()
		WHERE id = $1 AND state = 'running' RETURNING steps, updated_at`, op.ID, step).Scan(&op.Steps, &op.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenancy.Errorf(tenancy.CodeConflict, "the %s of tenant %q is no longer running", op.Kind, op.TenantSlug)
	}
	if err != nil {
		return fmt.Errorf("record step %s of the %s of tenant %q: %w", step, op.Kind, op.TenantSlug, err)
	}
	op.Step = step
	return nil
}

// FailOperation records that op stopped at its current step with cause. It
// stays open.
func (c *Catalog) FailOperation(ctx context.Context, op *Operation, cause error) error {
	_, err := c.pool.Exec(ctx, `UPDATE catalog.operations SET state = 'failed', error = $2, updated_at = now()
		WHERE id = $1 AND state = 'running'`, op.ID, cause.Error())
	if err != nil {
		return fmt.Errorf("record the failure of the %s of tenant %q: %w", op.Kind, op.TenantSlug, err)
	}
	op.State, op.Error = OpFailed, cause.Error()
	return nil
}

// FinishOperationTx records, in tx, that op ended in state (OpDone or
// OpRolledBack); done also completes its current step. It fails with CodeConflict when op was not open.
func FinishOperationTx(ctx context.Context, tx pgx.Tx, op *Operation, state OpState) error {
	if state.Open() {
		return fmt.Errorf("finish operation: %s is not a final state", state)
	}
	err := tx.QueryRow(ctx, `UPDATE catalog.operations SET state = $2, updated_at = now(), finished_at = now(),
			steps = CASE WHEN $2 = 'done' AND step <> '' AND NOT step = ANY(steps) THEN steps || step ELSE steps END
		WHERE id = $1 AND state IN ('running', 'failed') RETURNING steps, updated_at, finished_at`, op.ID, state).Scan(&op.Steps, &op.UpdatedAt, &op.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenancy.Errorf(tenancy.CodeConflict, "the %s of tenant %q is no longer open", op.Kind, op.TenantSlug)
	}
	if err != nil {
		return fmt.Errorf("finish the %s of tenant %q: %w", op.Kind, op.TenantSlug, err)
	}
	op.State = state
	return nil
}

// OpenOperation returns the tenant's open operation, or nil when it has none.
func (c *Catalog) OpenOperation(ctx context.Context, tenantID uuid.UUID) (*Operation, error) {
	op, err := scanOp(c.pool.QueryRow(ctx, `SELECT `+opColumns+` FROM catalog.operations
		WHERE tenant_id = $1 AND state IN ('running', 'failed')`, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read open operation of tenant %s: %w", tenantID, err)
	}
	return op, nil
}

// OperationOpts filter Operations. The zero value lists every operation.
type OperationOpts struct {
	TenantID uuid.UUID // only this tenant's
	OpenOnly bool      // only running or failed ones
	Limit    int       // at most this many, newest first; default 100
}

// Operations lists operations, newest first.
func (c *Catalog) Operations(ctx context.Context, opts *OperationOpts) ([]*Operation, error) {
	if opts == nil {
		opts = &OperationOpts{}
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := c.pool.Query(ctx, `SELECT `+opColumns+` FROM catalog.operations
		WHERE ($1::uuid IS NULL OR tenant_id = $1) AND (NOT $2 OR state IN ('running', 'failed'))
		ORDER BY started_at DESC, id LIMIT $3`, nilUUID(opts.TenantID), opts.OpenOnly, limit)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Operation, error) { return scanOp(r) })
}

// LockTenant takes a lock, held until the returned function is called (or the
// process dies), that only one process at a time may hold for a tenant: the
// one running one of its operations. It fails with CodeConflict when another
// process holds it.
//
// The lock lives on a connection of its own pool: a holder then needs the
// catalog's pool only for its own statements, so holders never starve each
// other of connections; when the lock pool is exhausted, more callers wait.
func (c *Catalog) LockTenant(ctx context.Context, id uuid.UUID, slug string) (unlock func(), err error) {
	c.locksOnce.Do(func() {
		cfg := c.pool.Config().Copy()
		cfg.MinConns = 0
		c.locks, c.locksErr = pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	})
	if c.locks == nil {
		return nil, fmt.Errorf("lock tenant %q: the catalog is closed (%v)", slug, c.locksErr)
	}
	conn, err := c.locks.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock tenant %q: %w", slug, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('tenancy.tenant:' || $1::text, 0))`, id).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("lock tenant %q: %w", slug, err)
	}
	if !ok {
		conn.Release()
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is being changed by another process; retry later", slug)
	}
	return func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtextextended('tenancy.tenant:' || $1::text, 0))`, id); err != nil {
			// The lock dies with the connection.
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}, nil
}

func nilUUID(id uuid.UUID) any {
	if id == uuid.Nil {
		return nil
	}
	return id
}

// whoFrom returns the operator and client IP that ctx carries, for the records
// of the control plane.
func whoFrom(ctx context.Context) (operator, clientIP string) {
	if a, ok := tenancy.ActorFromContext(ctx); ok {
		operator = a.String()
	}
	if cl, ok := tenancy.ClientFromContext(ctx); ok {
		clientIP = cl.IP
	}
	return operator, clientIP
}

// TenantBySlugTx reads the tenant with the given slug in tx and locks its row
// until tx ends.
func TenantBySlugTx(ctx context.Context, tx pgx.Tx, slug string) (*tenancy.Tenant, error) {
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, err
	}
	t, err := scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM catalog.tenants WHERE slug = $1 FOR UPDATE`, slug))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", slug)
	}
	if err != nil {
		return nil, fmt.Errorf("read tenant %q: %w", slug, err)
	}
	return t, nil
}

// LastOperationTx returns, in tx, the tenant's most recently finished
// operation of the kind that ended done, or nil.
func LastOperationTx(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, kind OpKind) (*Operation, error) {
	op, err := scanOp(tx.QueryRow(ctx, `SELECT `+opColumns+` FROM catalog.operations
		WHERE tenant_id = $1 AND kind = $2 AND state = 'done' ORDER BY finished_at DESC LIMIT 1`, tenantID, kind))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read last %s of tenant %s: %w", kind, tenantID, err)
	}
	return op, nil
}

// SetTierTx changes, in tx, the tier of the tenant with the given id and
// returns it updated.
func SetTierTx(ctx context.Context, tx pgx.Tx, id uuid.UUID, tier tenancy.Tier) (*tenancy.Tenant, error) {
	t, err := scanTenant(tx.QueryRow(ctx, `UPDATE catalog.tenants SET tier = $2 WHERE id = $1 RETURNING `+tenantColumns, id, string(tier)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("set tier of tenant %s: %w", id, err)
	}
	return t, nil
}
