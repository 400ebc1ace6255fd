package router

import (
	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgerr"
)

// unavailable gives a failure of the tenant's server — it restarted, is
// unreachable, or the tenant's database is gone — the code CodeUnavailable, so
// that callers answer 503 and may retry, instead of an internal error. Other
// errors (the function's own, SQL errors, the caller's cancelled context) are
// returned as they are.
func unavailable(t *tenancy.Tenant, err error) error {
	if !pgerr.ServerFailure(err) {
		return err
	}
	return tenancy.Errorf(tenancy.CodeUnavailable, "tenant %q: its database is unavailable; retry later: %w", t.Slug, err)
}
