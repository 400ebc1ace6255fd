package router_test

// The faults of fault_test.go with a private PgBouncer in transaction mode
// between the router and each server, as many deployments run it. The router's
// connections then end at PgBouncer, which outlives the server: a restart
// breaks only the transactions in flight, and PgBouncer holds the others in
// its queue until it can log in to the server again, or the caller's deadline.

import "testing"

// TestFaultServerRestartBehindPgBouncer is TestFaultServerRestartUnderLoad
// behind PgBouncer: no acknowledged insert lost, every failure unavailable,
// and the same router serves every tenant again without a failure.
func TestFaultServerRestartBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testServerRestartUnderLoad(t, true)
}

// TestFaultTenantDatabaseDroppedBehindPgBouncer is
// TestFaultTenantDatabaseDropped behind PgBouncer. The first transaction after
// the drop waits in PgBouncer's queue until its deadline (PgBouncer cannot log
// in to the database, and holds it), and is unavailable; the next are refused
// at once; the other tenants are served throughout.
func TestFaultTenantDatabaseDroppedBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testTenantDatabaseDropped(t, true)
}

// TestFaultSlowTenantBehindPgBouncer is TestFaultSlowTenantDoesNotStarveOthers
// behind PgBouncer. PgBouncer's pool has one server connection per database
// and role, so the slow tenant's transactions run one at a time on the server
// and the rest wait in PgBouncer's queue; each of them still holds one of the
// router's connections to PgBouncer, and it is the router's per-database cap
// that leaves the other tenants their share of the budget.
func TestFaultSlowTenantBehindPgBouncer(t *testing.T) {
	t.Parallel()
	testSlowTenantDoesNotStarveOthers(t, true)
}
