package provision

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
)

// Suspend suspends an active tenant: its data is kept, its requests are
// refused (CodeSuspended).
func (p *Provisioner) Suspend(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.transition(ctx, slug, catalog.OpSuspend, catalog.EventSuspended, fixed(tenancy.StatusSuspended), tenancy.StatusActive)
}

// Unsuspend makes a suspended tenant active again.
func (p *Provisioner) Unsuspend(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.transition(ctx, slug, catalog.OpResume, catalog.EventResumed, fixed(tenancy.StatusActive), tenancy.StatusSuspended)
}

// Delete soft-deletes an active or suspended tenant: its data is kept until a
// Purge, its requests get CodeGone, and Restore brings it back.
func (p *Provisioner) Delete(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.transition(ctx, slug, catalog.OpDelete, catalog.EventDeleted, fixed(tenancy.StatusDeleted), tenancy.StatusActive, tenancy.StatusSuspended)
}

// Restore brings a deleted tenant back, in the status it had when it was
// deleted (active or suspended), with its data unchanged. A purged tenant
// cannot be restored.
func (p *Provisioner) Restore(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.transition(ctx, slug, catalog.OpRestore, catalog.EventRestored, func(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant) (tenancy.Status, error) {
		del, err := catalog.LastOperationTx(ctx, tx, t.ID, catalog.OpDelete)
		if err != nil {
			return "", err
		}
		if del != nil && from(del) == tenancy.StatusSuspended {
			return tenancy.StatusSuspended, nil
		}
		return tenancy.StatusActive, nil
	}, tenancy.StatusDeleted)
}

// SetTier changes a tenant's tier.
func (p *Provisioner) SetTier(ctx context.Context, slug string, tier tenancy.Tier) (*tenancy.Tenant, error) {
	if err := tenancy.ValidateName("tier", string(tier)); err != nil {
		return nil, err
	}
	var out *tenancy.Tenant
	err := p.tenantTx(ctx, slug, func(tx pgx.Tx, t *tenancy.Tenant) (err error) {
		if t.Status == tenancy.StatusPurged {
			return tenancy.Errorf(tenancy.CodeConflict, "tenant %q was purged", slug)
		}
		if out, err = catalog.SetTierTx(ctx, tx, t.ID, tier); err != nil {
			return err
		}
		return catalog.RecordEventTx(ctx, tx, &catalog.Event{Kind: catalog.EventTierChanged, TenantID: t.ID, TenantSlug: t.Slug},
			map[string]any{"from": t.Tier, "to": tier})
	})
	return out, err
}

// fixed is a target status that does not depend on the tenant.
func fixed(s tenancy.Status) func(context.Context, pgx.Tx, *tenancy.Tenant) (tenancy.Status, error) {
	return func(context.Context, pgx.Tx, *tenancy.Tenant) (tenancy.Status, error) { return s, nil }
}

// from is the status an operation found its tenant in.
func from(op *catalog.Operation) tenancy.Status {
	var params struct {
		From tenancy.Status `json:"from"`
	}
	_ = json.Unmarshal(op.Params, &params)
	return params.From
}

// transition moves a tenant from one of the statuses in allowed to the status
// to returns, recording the operation (done at once) and the event, in one
// catalog transaction. Any other status is a CodeConflict and changes nothing.
func (p *Provisioner) transition(ctx context.Context, slug string, kind catalog.OpKind, event catalog.EventKind,
	to func(context.Context, pgx.Tx, *tenancy.Tenant) (tenancy.Status, error), allowed ...tenancy.Status) (*tenancy.Tenant, error) {
	var out *tenancy.Tenant
	err := p.tenantTx(ctx, slug, func(tx pgx.Tx, t *tenancy.Tenant) error {
		if !slices.Contains(allowed, t.Status) {
			return refusal(kind, t)
		}
		target, err := to(ctx, tx, t)
		if err != nil {
			return err
		}
		op := &catalog.Operation{Kind: kind, TenantID: t.ID, TenantSlug: t.Slug, Step: string(kind),
			Params: jsonMarshal(map[string]any{"from": t.Status, "to": target})}
		if err := catalog.StartOperationTx(ctx, tx, op); err != nil {
			return err
		}
		out, err = finishTx(ctx, tx, op, t.ID, target, t.Status, event, func(*tenancy.Tenant) any {
			return map[string]any{"from": t.Status, "to": target}
		})
		return err
	})
	return out, err
}

// refusal is the CodeConflict error of an operation that the tenant's status
// does not allow, with what to do instead.
func refusal(kind catalog.OpKind, t *tenancy.Tenant) error {
	var hint string
	switch t.Status {
	case tenancy.StatusProvisioning:
		hint = ": finish or roll back its provisioning first"
	case tenancy.StatusMoving:
		hint = ": wait for its move to end"
	case tenancy.StatusDeleted:
		hint = ": restore it first"
	case tenancy.StatusPurged:
		hint = ": its data is gone"
	}
	return tenancy.Errorf(tenancy.CodeConflict, "cannot %s tenant %q: it is %s%s", kind, t.Slug, t.Status, hint)
}

// tenantTx runs fn in a catalog transaction, with the row of the tenant with
// the slug read and locked.
func (p *Provisioner) tenantTx(ctx context.Context, slug string, fn func(pgx.Tx, *tenancy.Tenant) error) error {
	return p.cfg.Catalog.Tx(ctx, func(tx pgx.Tx) error {
		t, err := catalog.TenantBySlugTx(ctx, tx, slug)
		if err != nil {
			return err
		}
		return fn(tx, t)
	})
}
