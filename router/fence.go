package router

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// A tenant's move (package move) ends with a short fence on its old
// placement: the mover holds the tenant's fence lock exclusively while it
// copies the last changes, verifies them and switches the placement in the
// catalog. Every tenant transaction's prelude calls tenancy.enter, which takes
// that lock in shared mode: transactions arriving during the fence wait for
// it (they do not fail), and the mover waits for those in flight. Once the
// tenant has moved, its old database marks it moved away and tenancy.enter
// refuses it there with SQLSTATE TN001. The router then resolves the tenant
// again from the catalog, past its cache, and runs the transaction once more
// at the new placement. A database dropped with the tenant's old placement
// (SQLSTATE 3D000 on connect) is handled the same way.

// invalidator is a Resolver that caches (the catalog's Cache): the router
// drops a tenant from it before resolving it again after a move.
type invalidator interface {
	Invalidate(id uuid.UUID)
}

// isMovedAway reports whether err says the tenant's transaction reached a
// placement the tenant has left, or waited for a move's fence under a
// snapshot older than the move.
func isMovedAway(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == dataplane.MovedAwayCode || pgErr.Code == "3D000" // invalid_catalog_name: database gone
}

// resolveAfterMove returns the tenant's current record from the catalog,
// bypassing the resolver's cache when it has one.
func (r *Router) resolveAfterMove(ctx context.Context, t *tenancy.Tenant) (*tenancy.Tenant, error) {
	if inv, ok := r.cfg.Resolver.(invalidator); ok {
		inv.Invalidate(t.ID)
	}
	nt, err := r.cfg.Resolver.ResolveID(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if err := nt.CheckServable(); err != nil {
		return nil, err
	}
	return nt, nil
}

// movedAwayAgain is the error of a transaction refused for a move twice: the
// catalog still names a placement the tenant has left, which happens only
// while an interrupted move waits to be run again.
func movedAwayAgain(t *tenancy.Tenant, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code != dataplane.MovedAwayCode {
		return unavailable(t, err) // a database gone for another reason than a move
	}
	return &tenancy.Error{Code: tenancy.CodeUnavailable, Err: err,
		Message: "tenant " + t.Slug + " is being moved; retry later"}
}
