package provision

import (
	"context"

	"github.com/tenancyhq/tenancy"
)

// place picks the server of a new tenant: the one named, else the least
// loaded server of the region asked for, else the least loaded server. Load is
// tenants per capacity; full servers are passed over, and when every
// candidate is full the tenant is refused with CodeUnavailable.
func (p *Provisioner) place(ctx context.Context, opts *CreateOpts) (*tenancy.Server, error) {
	if opts.Server != "" {
		if err := tenancy.ValidateName("server name", opts.Server); err != nil {
			return nil, err
		}
		return p.cfg.Catalog.Server(ctx, opts.Server)
	}
	servers, err := p.cfg.Catalog.Servers(ctx)
	if err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		return nil, tenancy.Errorf(tenancy.CodeUnavailable, "no server in the catalog: add one first")
	}
	loads, err := p.cfg.Catalog.ServerLoads(ctx)
	if err != nil {
		return nil, err
	}
	leastLoaded := func(region string) *tenancy.Server {
		var best *tenancy.Server
		for _, s := range servers { // by name, so ties go to the first name
			if (region != "" && s.Region != region) || loads[s.Name] >= s.Capacity {
				continue
			}
			// loads[s]/s.Capacity < loads[best]/best.Capacity, without division
			if best == nil || loads[s.Name]*best.Capacity < loads[best.Name]*s.Capacity {
				best = s
			}
		}
		return best
	}
	if opts.Region != "" {
		if s := leastLoaded(opts.Region); s != nil {
			return s, nil
		}
	}
	if s := leastLoaded(""); s != nil {
		return s, nil
	}
	return nil, tenancy.Errorf(tenancy.CodeUnavailable, "every server is full: add a server or raise a capacity")
}
