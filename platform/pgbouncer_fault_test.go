package platform_test

// The catalog outage of fault_test.go with a private PgBouncer in transaction
// mode between the router and each server of the data plane, as many
// deployments run it. The catalog is still reached directly: its listener
// holds a session (LISTEN), which a pooler in transaction mode cannot keep.

import "testing"

// TestFaultCatalogUnreachableBehindPgBouncer is TestFaultCatalogUnreachable
// behind PgBouncer: known tenants are served from the cache through
// PgBouncer for the whole outage, and the rest as without it.
func TestFaultCatalogUnreachableBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testCatalogUnreachable(t, true)
}

// TestFaultCatalogUnreachableWithLimitsBehindPgBouncer is
// TestFaultCatalogUnreachableWithLimits behind PgBouncer: the limits last
// read are served with the tenants, through PgBouncer.
func TestFaultCatalogUnreachableWithLimitsBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testCatalogUnreachableWithLimits(t, true)
}
