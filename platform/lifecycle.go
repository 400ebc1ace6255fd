package platform

import (
	"context"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/provision"
)

// The tenant lifecycle. Each change is recorded in the catalog as an
// operation and a control-plane event, with the operator and client IP that
// ctx carries (tenancy.WithActor, tenancy.WithClient); see package provision.

// SuspendTenant suspends an active tenant: its data is kept, its requests get
// CodeSuspended (HTTP 403).
func (p *Platform) SuspendTenant(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.Provisioner.Suspend(ctx, slug)
}

// ResumeTenant makes a suspended tenant active again.
func (p *Platform) ResumeTenant(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.Provisioner.Unsuspend(ctx, slug)
}

// DeleteTenant soft-deletes a tenant: its data is kept until PurgeTenant, its
// requests get CodeGone (HTTP 410), and RestoreTenant brings it back.
func (p *Platform) DeleteTenant(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.Provisioner.Delete(ctx, slug)
}

// RestoreTenant brings a deleted (not purged) tenant back as it was.
func (p *Platform) RestoreTenant(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.Provisioner.Restore(ctx, slug)
}

// PurgeTenant destroys a deleted tenant's data once its retention period
// (Config.Retention) has passed; opts.Confirm must be the slug. Its catalog
// row stays as a tombstone. The copies that moves with KeepSource left go
// first (move.Mover.DropKept), so that none outlives the purge. A purge that
// stopped half-way is finished by calling it again.
func (p *Platform) PurgeTenant(ctx context.Context, slug string, opts *provision.PurgeOpts) (*tenancy.Tenant, error) {
	// Checked first: nothing is removed for a purge that would be refused.
	if err := p.Provisioner.CheckPurge(ctx, slug, opts); err != nil {
		return nil, err
	}
	if _, err := p.Mover.DropKept(ctx, slug, 0); err != nil {
		return nil, err
	}
	return p.Provisioner.Purge(ctx, slug, opts)
}

// SetTenantTier changes a tenant's tier.
func (p *Platform) SetTenantTier(ctx context.Context, slug string, tier tenancy.Tier) (*tenancy.Tenant, error) {
	return p.Provisioner.SetTier(ctx, slug, tier)
}

// ContinueTenant finishes the tenant's unfinished provisioning or purge, left
// by a process that died or a step that failed.
func (p *Platform) ContinueTenant(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	return p.Provisioner.Continue(ctx, slug)
}

// RollbackTenant undoes the tenant's unfinished provisioning: its storage,
// role and catalog row.
func (p *Platform) RollbackTenant(ctx context.Context, slug string) error {
	return p.Provisioner.Rollback(ctx, slug)
}
