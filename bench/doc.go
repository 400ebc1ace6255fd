// Package bench measures tenancy against the alternatives a Go team would
// otherwise pick, on real PostgreSQL, and tenancy at scale. It is its own
// module, so that the peers it compares with (GORM, database/sql) stay out of
// the library's go.mod.
//
// The comparison (harness_test.go): the example CRM's typical statements (a
// point read of a contact, a filtered list of deals, an insert of a contact,
// an update of a deal), one transaction each, through
//
//   - raw pgx with a hand-written WHERE tenant_id = $1: the limit;
//   - tenancy's router, in each isolation model;
//   - GORM with a hand-rolled per-request SET search_path (schema per tenant);
//   - database/sql with a session-level SET app.tenant_id (shared tables).
//
// Sides are interleaved round by round, and each is reported as a ratio to the
// limit of its model measured in the same round, which cancels most of the
// noise of a shared machine. One command runs it and writes the report:
//
//	cd bench && go test -run TestCompare -compare -rounds 10 -ops 300 -out results
//
// Everything, one measurement after the other, and the reports (about 11
// minutes on a 2-vCPU machine, most of it provisioning 12,200 tenants):
//
//	cd bench && go test -timeout 60m . -compare -http -scale -out ../docs/bench
//
// Without -compare, TestCompare runs a smoke round of a few transactions per
// side. The scale run (scale_test.go) is behind its own flag:
//
//	cd bench && go test -run TestScale -scale -timeout 60m -out results
//
// It grows the fleet by tens up to -scale.shared, -scale.schema and
// -scale.database tenants (10,000 / 2,000 / 200 by default) on -scale.servers
// servers (1), each with a connection budget of 50, and serves Zipf traffic at
// every level.
package bench
