// Package migrate applies the tenant data model to every target of the fleet:
// the shared tables of each server, every tenant schema and every tenant
// database.
//
// Each target migrates in its own transaction, under its own advisory lock,
// and records its version and the checksum of every applied file in its own
// version table (datamodel.VersionTable). A target that fails rolls back whole
// and is reported with its error; the others go on, or stop with FailFast. A
// re-run resumes where the last one stopped: targets already at the latest
// version cost one read of their version table.
//
// A target also records which release of the library prepared it (the soft
// delete, audit and fence functions, the policies and triggers on its
// tables). A target at the latest version prepared by a release with other
// SQL is stale (datamodel.State.Stale, summary "stale"): Up prepares it again,
// in its own transaction like a migration, and reports it migrated with no
// migration applied. Upgrading the library is therefore a run of Up.
// During a rolling upgrade, a node of the older release that prepares a
// tenant (a create, a move) installs its own functions in that database, which
// every schema of the database shares: the targets there turn stale again,
// and stay so until the last older node is gone and Up runs once more.
//
// Targets run in parallel, bounded overall (Config.Parallel) and per server
// (Config.PerServer). Two migrators never run at once: Up holds an advisory
// lock on the catalog for the whole run. A canary (UpOpts.Canary or
// UpOpts.Group) migrates a few targets first and stops at their first failure.
//
// Tenants created while Up runs are born at the latest version by the
// provisioner; Up also looks again for targets once it has finished its list,
// so a tenant created meanwhile by an older node is caught too.
package migrate
