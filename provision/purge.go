package provision

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// The steps of a purge.
const (
	stepRows      = "rows"
	stepTombstone = "tombstone"
)

// PurgeOpts are the arguments of Purge.
type PurgeOpts struct {
	// Confirm must be the tenant's slug: purging destroys its data.
	Confirm string
}

// Purge destroys a deleted tenant's data, once its retention period has
// passed since it was deleted, and leaves its catalog row as a tombstone
// (status purged). The schema model drops the tenant's schema and role, the
// database model its database and role, the shared model deletes its rows from
// the shared tables. It fails, changing nothing, with CodeInvalid without the
// confirmation, and with CodeConflict when the tenant is not deleted or its
// retention has not passed (the error says when it will have). A purge that
// stopped half-way is continued by calling Purge (or Continue) again.
func (p *Provisioner) Purge(ctx context.Context, slug string, opts *PurgeOpts) (*tenancy.Tenant, error) {
	t, unfinished, err := p.purgeRequest(ctx, slug, opts)
	if err != nil {
		return nil, err
	}
	if unfinished {
		return p.Continue(ctx, slug)
	}
	unlock, err := p.cfg.Catalog.LockTenant(ctx, t.ID, t.Slug)
	if err != nil {
		return nil, err
	}
	defer unlock()
	op := &catalog.Operation{Kind: catalog.OpPurge, TenantID: t.ID, TenantSlug: t.Slug}
	err = p.cfg.Catalog.Tx(ctx, func(tx pgx.Tx) error {
		cur, err := catalog.TenantBySlugTx(ctx, tx, slug)
		if err != nil {
			return err
		}
		if err := p.purgeable(ctx, tx, cur); err != nil {
			return err
		}
		t = cur
		return catalog.StartOperationTx(ctx, tx, op)
	})
	if err != nil {
		return nil, err
	}
	server, err := p.cfg.Catalog.Server(ctx, t.Placement.Server)
	if err != nil {
		return nil, err
	}
	return p.purge(ctx, server, t, op)
}

// CheckPurge returns the error that Purge would refuse slug and opts with
// before it changes anything — a malformed slug, no confirmation, an unknown
// tenant, one that is not deleted or is still retained — or nil when Purge
// would start (or finish a purge left unfinished). It changes nothing. The
// control API checks a purge with it before running it in the background.
func (p *Provisioner) CheckPurge(ctx context.Context, slug string, opts *PurgeOpts) error {
	t, unfinished, err := p.purgeRequest(ctx, slug, opts)
	if err != nil || unfinished {
		return err
	}
	return p.cfg.Catalog.Tx(ctx, func(tx pgx.Tx) error { return p.purgeable(ctx, tx, t) })
}

// purgeRequest checks the arguments of a purge and returns the tenant, and
// whether a purge of it was left unfinished.
func (p *Provisioner) purgeRequest(ctx context.Context, slug string, opts *PurgeOpts) (*tenancy.Tenant, bool, error) {
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, false, err
	}
	if opts == nil || opts.Confirm != slug {
		return nil, false, tenancy.FieldErrorf(tenancy.CodeInvalid, "confirm", "purging tenant %q destroys its data for good: confirm with its slug", slug)
	}
	t, err := p.cfg.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return nil, false, err
	}
	open, err := p.cfg.Catalog.OpenOperation(ctx, t.ID)
	if err != nil {
		return nil, false, err
	}
	return t, open != nil && open.Kind == catalog.OpPurge, nil
}

// purgeable fails unless t is deleted and its retention has passed, by the
// catalog's clock.
func (p *Provisioner) purgeable(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant) error {
	if t.Status == tenancy.StatusPurged {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q was already purged", t.Slug)
	}
	if t.Status != tenancy.StatusDeleted || t.DeletedAt == nil {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q is %s: only a deleted tenant can be purged; delete it first", t.Slug, t.Status)
	}
	var now time.Time
	if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return fmt.Errorf("read the catalog's clock: %w", err)
	}
	if from := t.DeletedAt.Add(p.cfg.Retention); now.Before(from) {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q was deleted at %s and is retained for %s: it can be purged from %s",
			t.Slug, t.DeletedAt.UTC().Format(time.RFC3339), p.cfg.Retention, from.UTC().Format(time.RFC3339))
	}
	return nil
}

// purge runs the purge's remaining steps; a failure leaves it open, recorded
// as failed.
func (p *Provisioner) purge(ctx context.Context, server *tenancy.Server, t *tenancy.Tenant, op *catalog.Operation) (*tenancy.Tenant, error) {
	sess := p.session(server, t)
	defer sess.close(ctx)
	var purged *tenancy.Tenant
	err := p.runSteps(ctx, op, p.purgeSteps(sess, op, &purged))
	if err == nil {
		return purged, nil
	}
	return nil, fmt.Errorf("purge tenant %q: %w; purge it again to finish", t.Slug, p.recordFailure(context.WithoutCancel(ctx), op, err))
}

func (p *Provisioner) purgeSteps(s *session, op *catalog.Operation, purged **tenancy.Tenant) []step {
	t := s.t
	tombstone := p.finalStep(stepTombstone, op, tenancy.StatusPurged, tenancy.StatusDeleted, catalog.EventPurged,
		func(*tenancy.Tenant) any {
			return map[string]any{"model": t.Model, "placement": t.Placement, "deleted_at": t.DeletedAt}
		}, purged)
	role := step{name: stepRole, do: func(ctx context.Context) error {
		conn, err := s.conn(ctx, "")
		if err != nil {
			return err
		}
		return dataplane.DropRole(ctx, conn, t.Role())
	}}
	switch t.Model {
	case tenancy.ModelSchema:
		return []step{{name: stepSchema, do: func(ctx context.Context) error { return p.dropStorage(ctx, s) }}, role, tombstone}
	case tenancy.ModelDatabase:
		return []step{{name: stepDatabase, do: func(ctx context.Context) error { return p.dropStorage(ctx, s) }}, role, tombstone}
	}
	return []step{{name: stepRows, do: func(ctx context.Context) error {
		return s.tx(ctx, "", func(tx pgx.Tx) error {
			_, err := datamodel.PurgeTenantTx(ctx, tx, SharedSchema, t.ID)
			return err
		})
	}}, tombstone}
}
