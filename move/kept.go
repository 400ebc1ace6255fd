package move

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
)

// Kept is a copy of a tenant that a move with Opts.KeepSource left in place:
// marked moved away, so never served, and still holding the tenant's rows as
// they were at the move.
type Kept struct {
	Move      int64             `json:"move"`
	Model     tenancy.Model     `json:"model"`
	Placement tenancy.Placement `json:"placement"`
	MovedAt   time.Time         `json:"moved_at"`
}

// TenantsWithKept returns the slugs of the tenants that have kept copies not
// removed yet, for a sweep of the fleet (`tenancy tenants kept --drop
// --older-than D`).
func (m *Mover) TenantsWithKept(ctx context.Context) ([]string, error) {
	rows, err := m.pool().Query(ctx, `SELECT DISTINCT t.slug FROM catalog.moves mv JOIN catalog.tenants t ON t.id = mv.tenant_id
		WHERE mv.state = 'done' AND mv.keep_source AND mv.source_dropped_at IS NULL ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("find tenants with kept copies: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// KeptSources returns the tenant's kept copies that are not removed yet,
// oldest first, leaving out any at the tenant's current placement (a later
// move back there replaced it with the tenant's live rows).
func (m *Mover) KeptSources(ctx context.Context, slug string) ([]Kept, error) {
	t, err := m.cfg.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return nil, err
	}
	return m.kept(ctx, t)
}

func (m *Mover) kept(ctx context.Context, t *tenancy.Tenant) ([]Kept, error) {
	rows, err := m.pool().Query(ctx, `SELECT id, src_model, src_server, src_database, src_schema, updated_at FROM catalog.moves
		WHERE tenant_id = $1 AND state = 'done' AND keep_source AND source_dropped_at IS NULL ORDER BY id`, t.ID)
	if err != nil {
		return nil, fmt.Errorf("read the tenant's kept copies: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Kept, error) {
		var k Kept
		err := r.Scan(&k.Move, &k.Model, &k.Placement.Server, &k.Placement.Database, &k.Placement.Schema, &k.MovedAt)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the tenant's kept copies: %w", err)
	}
	var out []Kept
	for _, k := range all {
		if k.Placement != t.Placement {
			out = append(out, k)
		}
	}
	return out, nil
}

// DropKept removes the tenant's kept copies (see KeptSources) made more
// than olderThan ago (0: all of them), and records each removed in its move;
// it returns those it removed. It is idempotent: a run stopped half-way is
// finished by running it again. It takes turns with the tenant's moves, and
// refuses (CodeConflict) while one is unfinished: run the move again first.
// A tenant's purge runs it first, with 0, so that no copy of a purged
// tenant's data outlives it.
func (m *Mover) DropKept(ctx context.Context, slug string, olderThan time.Duration) ([]Kept, error) {
	if olderThan < 0 {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "the age of kept copies to remove must be positive, got %v", olderThan)
	}
	t, r, unlock, err := m.begin(ctx, slug)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r != nil {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q has an unfinished move: run it again to finish or roll it back first", slug)
	}
	all, err := m.kept(ctx, t)
	if err != nil {
		return nil, err
	}
	var kept []Kept
	for _, k := range all {
		if olderThan == 0 || time.Since(k.MovedAt) > olderThan {
			kept = append(kept, k)
		}
	}
	for i, k := range kept {
		if err := m.dropStorage(ctx, t.ID, k.Model, k.Placement, &t.Placement, t.Model); err != nil {
			return kept[:i], fmt.Errorf("remove the copy of tenant %q kept by move %d at %s: %w", slug, k.Move, k.Placement, err)
		}
		if _, err := m.pool().Exec(ctx, `UPDATE catalog.moves SET source_dropped_at = now() WHERE id = $1`, k.Move); err != nil {
			return kept[:i], fmt.Errorf("record the kept copy of move %d removed: %w", k.Move, err)
		}
		m.cfg.Logger.InfoContext(ctx, "kept copy removed", "tenant", slug, "move", k.Move, "placement", k.Placement.String())
	}
	return kept, nil
}
