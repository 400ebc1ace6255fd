package move

import (
	"context"

	"github.com/tenancyhq/tenancy"
)

// TierPolicy gives the isolation model of each tier's tenants.
type TierPolicy map[tenancy.Tier]tenancy.Model

// DefaultTierPolicy puts free tenants in the shared tables, pro tenants in a
// schema of their own and enterprise tenants in a database of their own.
var DefaultTierPolicy = TierPolicy{
	"free":       tenancy.ModelShared,
	"pro":        tenancy.ModelSchema,
	"enterprise": tenancy.ModelDatabase,
}

// ChangeTier sets the tenant's tier (see provision.Provisioner.SetTier) and
// moves the tenant to the model that policy (nil: DefaultTierPolicy) gives
// the new tier, on opts.Server or its own server (opts.To is not used). A
// tier the policy does not name, or a tenant already in that model there,
// only changes the tier. Running it again after an interrupted move finishes
// the move. Bad input (an unknown tenant or server, a malformed tier or an
// unknown model in policy, a tenant that is not active when it must move)
// changes nothing.
func (m *Mover) ChangeTier(ctx context.Context, slug string, tier tenancy.Tier, policy TierPolicy, opts *Opts) (*tenancy.Tenant, *Result, error) {
	if err := tenancy.ValidateName("tier", string(tier)); err != nil {
		return nil, nil, err
	}
	if policy == nil {
		policy = DefaultTierPolicy
	}
	var o Opts
	if opts != nil {
		o = *opts
	}
	t, err := m.cfg.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return nil, nil, err
	}
	server := o.Server
	if server == "" {
		server = t.Placement.Server
	} else if _, err := m.cfg.Catalog.Server(ctx, server); err != nil {
		return nil, nil, err
	}
	model, move := policy[tier]
	if move {
		if _, err := tenancy.ParseModel(string(model)); err != nil {
			return nil, nil, err
		}
		move = model != t.Model || server != t.Placement.Server
	}
	if move && t.Status != tenancy.StatusActive {
		if r, err := m.open(ctx, t.ID); err != nil || r == nil {
			return nil, nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is %s: only an active tenant can be moved to its tier's model", t.Slug, t.Status)
		}
		// An interrupted move: Move below finishes or rolls it back first.
	}
	if t.Tier != tier {
		if t, err = m.cfg.Provisioner.SetTier(ctx, slug, tier); err != nil {
			return nil, nil, err
		}
	}
	if !move {
		return t, nil, nil
	}
	o.To, o.Server = model, server
	res, err := m.Move(ctx, slug, &o)
	if err != nil {
		return t, res, err
	}
	return res.Tenant, res, nil
}
