// Package move moves a tenant between isolation models (shared, schema,
// database) and between servers, online, with nothing lost.
//
// Because every tenant table has tenant_id and a primary key that starts
// with it in every model, a move is a copy of rows. A move:
//
//  1. records itself in the catalog (catalog.moves) and marks the tenant
//     moving; the tenant is served from its source all along;
//  2. creates the destination's storage as provisioning does, marked in the
//     destination database as not serving the tenant;
//  3. copies every tenant table, the audit log and its chain head included,
//     parents before children, from one REPEATABLE READ snapshot of the
//     source, streaming PostgreSQL's binary COPY from the source into the
//     destination with session_replication_role = replica (no trigger fires:
//     the audit log is copied, not rewritten); then verifies the destination
//     against that snapshot, every row by count and content checksum;
//  4. copies again, in catch-up rounds without a fence, the rows changed
//     meanwhile: the tenant's audit log names every changed row (entries are
//     numbered in commit order), so a round copies the rows named by the
//     entries after the last round's;
//  5. fences the tenant at the source: it takes the tenant's fence lock,
//     which every tenant transaction's prelude takes in share mode
//     (tenancy.enter, see router), so transactions in flight end and new
//     ones wait; it copies the last changes and the sequences' positions,
//     verifies (every table's row count, and the content of every row
//     changed since the bulk copy), marks the source moved away, switches the
//     placement in the catalog (its version changes and every node's cache
//     drops the tenant), and releases the fence. Waiting transactions then
//     find the mark, and the router runs them again at the new placement;
//  6. removes the source (or keeps it, marked, with Opts.KeepSource).
//
// Crash safety: every step is recorded in catalog.moves. Running a move again
// (Move or Resume) after the process died rolls back a move that had not
// switched (the tenant stays at its source; what the move created at the
// destination is removed) and finishes one that had. The source is removed
// only after the switch.
//
// Beside Move: Resume finishes or rolls back an interrupted move; ChangeTier
// sets a tenant's tier and moves it by a TierPolicy (free → shared, pro →
// schema, enterprise → database by default); Export writes a portable archive
// of everything a tenant owns and Import restores it, in any model, in any
// installation at the same data model version.
//
// The fence's pause grows with the rows changed during the last catch-up
// round, not with the tenant's size: see docs/MOVES.md for the protocol, its
// guarantees and the measured figures.
package move
