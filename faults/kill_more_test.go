package faults

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/provision"
)

// TestKillCreateSchema is TestKillCreate for a schema-model tenant: the
// re-run leaves it active exactly once, with exactly its one schema in the
// server's shared database, its role, no database, and served.
func TestKillCreateSchema(t *testing.T) { killCreate(t, tenancy.ModelSchema) }

// TestKillPurge kills "tenants purge" of a deleted tenant, in the schema and
// the database model, at a random moment after the purge's operation appears
// in the catalog, three times each. Right after the kill the tenant is
// deleted or purged, never served, and cannot be restored (a restore would
// make it active without its storage); purged only once its storage is gone.
// Running the same purge again finishes it: the catalog keeps one tombstone
// (purged, one purged event, no unfinished operation), and the server keeps
// no database, schema or role of the tenant.
func TestKillPurge(t *testing.T) {
	b := setup(t)
	dataDB := dataDBOf(t, b)
	for _, model := range tenancy.Models {
		t.Run(string(model), func(t *testing.T) { b.killPurge(t, dataDB, model) })
	}
}

// killPurge is TestKillPurge for tenants of one model.
func (b *bundle) killPurge(t *testing.T, dataDB string, model tenancy.Model) {
	op := b.timePurge(t, model)
	const runs = 3
	var killed int
	w := window(op)
	n := 0
	for i := 0; moreRuns(i, runs, killed); i++ {
		n++
		tn := b.deleted(t, model)
		args := purgeArgs(tn.Slug)
		k, after := b.runAndKill(t, b.purgeStarted(t, tn.Slug), 0, w, args...)
		if k {
			killed++
		}
		w = aim(w, k, after)
		status := b.checkHalfPurged(t, dataDB, tn)
		b.converge(t, alreadyPurged(tn.Slug), args...)
		b.checkPurged(t, dataDB, tn)
		t.Logf("run %d: killed %v after %v, left %s; converged", i, k, after, status)
	}
	t.Logf("%d of %d runs killed mid-way", killed, n)
	if killed == 0 {
		t.Error("no run was killed before it ended")
	}
}

// deleted creates a tenant of the model, with rows in the shared model, and
// deletes it: ready to be purged.
func (b *bundle) deleted(t *testing.T, model tenancy.Model) *tenancy.Tenant {
	t.Helper()
	slug := pgtest.UniqueName("kp")
	b.slugs = append(b.slugs, slug)
	b.mustRun(t, "tenants", "create", slug, "--model", string(model))
	if model == tenancy.ModelShared {
		// Its storage is its rows in the shared tables: enough of them
		// that deleting them takes a while to kill.
		b.addContacts(t, slug, sharedPurgeRows)
	}
	b.mustRun(t, "tenants", "delete", slug)
	return b.tenant(t, slug)
}

// purgeArgs is the command that purges the deleted tenant slug at once.
func purgeArgs(slug string) []string {
	return []string{"tenants", "purge", slug, "--confirm", slug, "--retention", "1ms"}
}

// alreadyPurged is what a re-run of a purge says when a killed run had
// finished it.
func alreadyPurged(slug string) string { return fmt.Sprintf("tenant %q was already purged", slug) }

// purgeStarted returns a function that reports whether the tenant's purge
// has begun: its operation is in the catalog.
func (b *bundle) purgeStarted(t *testing.T, slug string) func() bool {
	return b.exists(t, `SELECT EXISTS (SELECT 1 FROM catalog.operations WHERE tenant_slug = $1 AND kind = 'purge')`, slug)
}

// timePurge purges a reference tenant of the model and returns how long the
// purge's operation took. The first database tenant of a server also builds
// its template: not during the purge timed.
func (b *bundle) timePurge(t *testing.T, model tenancy.Model) time.Duration {
	t.Helper()
	ref := b.deleted(t, model).Slug
	full := b.timed(t, purgeArgs(ref)...)
	op := b.duration(t, `SELECT finished_at - started_at FROM catalog.operations WHERE tenant_slug = $1 AND kind = 'purge'`, ref)
	t.Logf("a %s tenant purged in %v, %v of it recorded as the purge's operation", model, full, op)
	return op
}

// moreRuns reports whether run i (from 0) is to be made: the planned runs,
// and more, up to three times as many, while none has been killed yet: a
// window measured in a reference run can be too long for every planned run
// when the operation goes faster afterwards.
func moreRuns(i, planned, killed int) bool {
	return i < planned || killed == 0 && i < 3*planned
}

// window is how long after an operation's row appears in the catalog a kill
// may come: a little more than the operation's recorded duration in a
// reference run (the start-up of the process comes before the row), and at
// least 20ms.
func window(op time.Duration) time.Duration {
	return max(op*5/4, 20*time.Millisecond)
}

// aim returns the kill window of the next run: w, or a shorter one when the
// last run ended before its kill came, after that long: runs vary, more so on
// a loaded machine.
func aim(w time.Duration, killed bool, after time.Duration) time.Duration {
	if killed {
		return w
	}
	return max(after*3/4, 10*time.Millisecond)
}

// duration runs query, which returns an interval, on the catalog with slug.
func (b *bundle) duration(t *testing.T, query, slug string) time.Duration {
	t.Helper()
	var secs float64
	if err := b.catalog(t).QueryRow(context.Background(), `SELECT extract(epoch FROM (`+query+`))`, slug).Scan(&secs); err != nil {
		t.Fatal(err)
	}
	return time.Duration(secs * float64(time.Second))
}

// checkHalfPurged checks a tenant whose purge was killed: it is deleted or
// purged (purged only with its storage gone), refused to its callers, and
// cannot be restored. It returns a description of what the kill left.
func (b *bundle) checkHalfPurged(t *testing.T, dataDB string, tn *tenancy.Tenant) string {
	t.Helper()
	status := b.status(t, tn.Slug)
	switch status {
	case tenancy.StatusPurged:
		b.checkNoStorage(t, b.server, dataDB, tn)
	case tenancy.StatusDeleted:
		// A shared tenant's rows go in one transaction, on another database
		// than the catalog's: all there, or all gone and the purge open.
		// Each of its contacts was logged once in its audit log, which
		// goes with them.
		if n, audit := sharedRows(t, b.server, dataDB, tn); tn.Model == tenancy.ModelShared && (n != audit || n != 0 && n != sharedPurgeRows) {
			t.Fatalf("a killed purge left %d of the shared tenant's %d contacts and %d audit entries", n, sharedPurgeRows, audit)
		}
	default:
		t.Fatalf("tenant %s is %s after a killed purge; want deleted or purged", tn.Slug, status)
	}
	if out, err := b.run(t, "tenants", "restore", tn.Slug); err == nil {
		t.Fatalf("a tenant whose purge was killed (%s) was restored:\n%s", status, out)
	}
	if got := b.status(t, tn.Slug); got != status {
		t.Fatalf("a refused restore changed the tenant from %s to %s", status, got)
	}
	p := b.openPlatform(t)
	if _, err := p.TenantContext(context.Background(), tn.Slug); err == nil {
		t.Fatalf("tenant %s (%s) is served after a killed purge", tn.Slug, status)
	}
	var step, state string
	err := b.catalog(t).QueryRow(context.Background(), `SELECT step, state FROM catalog.operations WHERE tenant_id = $1 AND kind = 'purge'`,
		tn.ID).Scan(&step, &state)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s, purge %s at step %q", status, state, step)
}

// checkPurged checks a finished purge: one tombstone in the catalog and
// nothing of the tenant on the server.
func (b *bundle) checkPurged(t *testing.T, dataDB string, tn *tenancy.Tenant) {
	t.Helper()
	var n, open, events int
	var status string
	err := b.catalog(t).QueryRow(context.Background(), `SELECT count(*), min(status),
		(SELECT count(*) FROM catalog.operations WHERE tenant_id = $1 AND state IN ('running', 'failed')),
		(SELECT count(*) FROM catalog.events WHERE tenant_id = $1 AND kind = 'purged')
		FROM catalog.tenants WHERE id = $1`, tn.ID).Scan(&n, &status, &open, &events)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || status != string(tenancy.StatusPurged) || open != 0 || events != 1 {
		t.Fatalf("catalog: %d tenants %q in status %q, %d unfinished operations, %d purged events; want one purged, none unfinished, one event",
			n, tn.Slug, status, open, events)
	}
	b.checkNoStorage(t, b.server, dataDB, tn)
}

// checkNoStorage checks that server s holds no database, schema (in its
// database dataDB) or role of the tenant.
func (b *bundle) checkNoStorage(t *testing.T, s *pgtest.Server, dataDB string, tn *tenancy.Tenant) {
	t.Helper()
	dbs, schemas := storageOn(t, s, dataDB, tn.Slug)
	if len(dbs) != 0 || len(schemas) != 0 || hasRole(t, s, tn.ID) {
		t.Fatalf("tenant %s on %s: databases %v, schemas %v, role %v; want none", tn.Slug, s.Name(), dbs, schemas, hasRole(t, s, tn.ID))
	}
	if contacts, audit := sharedRows(t, s, dataDB, tn); contacts+audit != 0 {
		t.Fatalf("tenant %s on %s: %d contacts and %d audit entries left in the shared tables; want none", tn.Slug, s.Name(), contacts, audit)
	}
}

// sharedPurgeRows is how many contacts a shared tenant has before its purge.
const sharedPurgeRows = 20000

// sharedRows counts the tenant's contacts and audit entries in the shared
// tables of dataDB on s.
func sharedRows(t *testing.T, s *pgtest.Server, dataDB string, tn *tenancy.Tenant) (contacts, audit int) {
	t.Helper()
	err := adminOn(t, s, dataDB).QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM shared.contacts WHERE tenant_id = $1),
		(SELECT count(*) FROM shared.tenancy_audit WHERE tenant_id = $1)`, tn.ID).Scan(&contacts, &audit)
	if err != nil {
		t.Fatal(err)
	}
	return contacts, audit
}

// checkStorage checks that server s holds exactly the storage of the
// tenant's model and placement: its one database (database model) or its one
// schema in the server's database dataDB (schema model), and its role.
func (b *bundle) checkStorage(t *testing.T, s *pgtest.Server, dataDB string, tn *tenancy.Tenant) {
	t.Helper()
	dbs, schemas := storageOn(t, s, dataDB, tn.Slug)
	// The tenant's storage, and the kind it must not have.
	own, other, want := dbs, schemas, tn.Placement.Database
	if tn.Model == tenancy.ModelSchema {
		own, other, want = schemas, dbs, tn.Placement.Schema
	}
	if !slices.Equal(own, []string{want}) || len(other) != 0 || !hasRole(t, s, tn.ID) {
		t.Fatalf("%s tenant %s on %s: databases %v, schemas %v, role %v; want its %s and role only",
			tn.Model, tn.Slug, s.Name(), dbs, schemas, hasRole(t, s, tn.ID), want)
	}
}

// hasRole reports whether server s has the tenant's role.
func hasRole(t *testing.T, s *pgtest.Server, tenant uuid.UUID) bool {
	t.Helper()
	var ok bool
	err := adminOn(t, s, "postgres").QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`,
		tenancy.RoleName(tenant)).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// catalog connects to the bundle's catalog database.
func (b *bundle) catalog(t *testing.T) *pgx.Conn {
	t.Helper()
	return b.admin(t, strings.TrimPrefix(mustPath(t, b.catalogURL), "/"))
}

// status is the catalog's status of the tenant.
func (b *bundle) status(t *testing.T, slug string) tenancy.Status {
	t.Helper()
	var s tenancy.Status
	if err := b.catalog(t).QueryRow(context.Background(), `SELECT status FROM catalog.tenants WHERE slug = $1`, slug).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKillMoveAcrossServers kills "tenants move --server" at a random moment
// while a tenant with rows moves between two PostgreSQL servers (database
// and schema model, four runs, each to the other server). Right after the
// kill, the catalog names one placement, which holds every row (the source
// is removed only after the switch), at most one of the move's two ends
// accepts the tenant's transactions, and the tenant is served from the
// catalog's placement unless the kill came inside the fence (then a move is
// unfinished). Running the same move again finishes it or rolls it back and
// moves again: the tenant is active at the destination with every row, and
// the other server keeps no database, schema or role of it.
func TestKillMoveAcrossServers(t *testing.T) {
	b := setup(t)
	servers, dataDBs := b.twoServers(t)
	const rows = 500
	slug := b.movableAcross(t, "kmx", rows)
	// Each run's kill window comes from the last move that went to its end.
	lastMove := func(what string) time.Duration {
		return b.duration(t, `SELECT `+what+` FROM catalog.moves m JOIN catalog.tenants t ON t.id = m.tenant_id
			WHERE t.slug = $1 AND m.state = 'done' ORDER BY m.id DESC LIMIT 1`, slug)
	}
	const (
		whole = "m.updated_at - m.created_at"
		fence = "m.pause_ms * interval '1 millisecond'" // the fence, from its lock to the switch
	)
	full := b.timed(t, "tenants", "move", slug, "--to", "database", "--server", "pg2")
	t.Logf("a move of %d rows to the other server in %v, %v of it recorded as the move, its fence %v",
		rows, full, lastMove(whole), lastMove(fence))

	var killed int
	// The runs killed from the start go to a database, whose creation is
	// not one transaction.
	moves := []dest{{tenancy.ModelDatabase, "pg1"}, {tenancy.ModelSchema, "pg2"}, {tenancy.ModelDatabase, "pg1"}, {tenancy.ModelDatabase, "pg2"}}
	for i, to := range moves {
		args := to.args(slug)
		// Creating the destination takes most of a move: runs 1 and 3 are
		// killed from the end of the bulk copy on (around the fence and
		// the switch) and from the switch on (around the source's
		// removal).
		var last int64
		if err := b.catalog(t).QueryRow(context.Background(), `SELECT coalesce(max(m.id), 0) FROM catalog.moves m
			JOIN catalog.tenants t ON t.id = m.tenant_id WHERE t.slug = $1`, slug).Scan(&last); err != nil {
			t.Fatal(err)
		}
		from, w := "('started', 'prepared', 'copied', 'switched', 'done')", window(lastMove(whole))
		switch i {
		case 1: // connecting for the fence, the fence
			from, w = "('copied', 'switched', 'done')", window(2*lastMove(fence))
		case 3:
			from, w = "('switched', 'done')", window(lastMove(whole)/8)
		}
		started := b.exists(t, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM catalog.moves m JOIN catalog.tenants t ON t.id = m.tenant_id
			WHERE t.slug = $1 AND m.id > %d AND m.state IN %s)`, last, from), slug)
		k, after := b.runAndKill(t, started, 0, w, args...)
		if k {
			killed++
		}
		at := b.checkHalfMoved(t, servers, slug, rows)
		b.converge(t, to.already(), args...)
		b.checkMovedAcross(t, servers, dataDBs, slug, to, rows)
		t.Logf("run %d: killed %v after %v, left %s; converged at %s on %s", i, k, after, at, to.model, to.server)
	}
	t.Logf("%d of %d runs killed mid-way", killed, len(moves))
	if killed == 0 {
		t.Error("no run was killed before it ended")
	}
}

// twoServers adds a second PostgreSQL server to the bundle's catalog, as
// pg2 (the first is pg1), and returns both and their shared databases by
// name. It skips the test when the harness has a single server.
func (b *bundle) twoServers(t *testing.T) (servers map[string]*pgtest.Server, dataDBs map[string]string) {
	t.Helper()
	pg2 := pgtest.Servers(t, 2)[1]
	if host(t, pg2) == host(t, b.server) {
		t.Skip("needs two distinct PostgreSQL servers")
	}
	b.others = append(b.others, pg2)
	servers = map[string]*pgtest.Server{"pg1": b.server, "pg2": pg2}
	dataDBs = map[string]string{"pg1": dataDBOf(t, b), "pg2": pg2.NewDatabase(t, "")}
	b.mustRun(t, "servers", "add", "pg2", "--dsn", pg2.URL(dataDBs["pg2"]))
	return servers, dataDBs
}

// movableAcross creates a database tenant on pg1 (its slug made from
// prefix) with rows contacts, and builds pg2's template database, so that
// no move timed or killed builds it.
func (b *bundle) movableAcross(t *testing.T, prefix string, rows int) string {
	t.Helper()
	slug := pgtest.UniqueName(prefix)
	b.slugs = append(b.slugs, slug)
	b.mustRun(t, "tenants", "create", slug, "--model", "database", "--server", "pg1")
	b.addContacts(t, slug, rows)
	// The first database tenant of a server builds its template.
	warm := pgtest.UniqueName(prefix)
	b.slugs = append(b.slugs, warm)
	b.mustRun(t, "tenants", "create", warm, "--model", "database", "--server", "pg2")
	return slug
}

// checkMovedAcross checks a finished move to another server: the tenant is
// active once at the destination, in the model asked for, with no unfinished
// move; the destination holds exactly its storage, the other server none of
// it; all its rows are served.
func (b *bundle) checkMovedAcross(t *testing.T, servers map[string]*pgtest.Server, dataDBs map[string]string, slug string, to dest, rows int) {
	t.Helper()
	tn := b.catalogCheck(t, slug)
	if tn.Model != to.model || tn.Placement.Server != to.server {
		t.Fatalf("tenant at %s (%s), want %s on %s", tn.Placement, tn.Model, to.model, to.server)
	}
	b.checkStorage(t, servers[to.server], dataDBs[to.server], tn)
	other := "pg1"
	if to.server == other {
		other = "pg2"
	}
	b.checkNoStorage(t, servers[other], dataDBs[other], tn)
	b.checkServed(t, slug, rows)
}

// host is the address of server s.
func host(t *testing.T, s *pgtest.Server) string {
	t.Helper()
	u, err := url.Parse(s.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// checkHalfMoved checks a tenant whose move was killed: the catalog names
// one placement, which holds every row; at most one end of the tenant's last
// move accepts it; it is served there, or, when its placement refuses it
// (the kill came inside the fence), a move is unfinished. It returns a
// description of what the kill left.
func (b *bundle) checkHalfMoved(t *testing.T, servers map[string]*pgtest.Server, slug string, rows int) string {
	t.Helper()
	ctx := context.Background()
	var tn tenancy.Tenant
	var src, dst tenancy.Placement
	var state string
	err := b.catalog(t).QueryRow(ctx, `SELECT t.id, t.status, t.server, t.database, t.schema,
			m.src_server, m.src_database, m.src_schema, m.dst_server, m.dst_database, m.dst_schema, m.state
		FROM catalog.tenants t JOIN catalog.moves m ON m.tenant_id = t.id
		WHERE t.slug = $1 ORDER BY m.id DESC LIMIT 1`, slug).Scan(&tn.ID, &tn.Status,
		&tn.Placement.Server, &tn.Placement.Database, &tn.Placement.Schema,
		&src.Server, &src.Database, &src.Schema, &dst.Server, &dst.Database, &dst.Schema, &state)
	if err != nil {
		t.Fatal(err)
	}
	at := tn.Placement
	if at != src && at != dst {
		t.Fatalf("the catalog places the tenant at %s, neither end of its last move (%s → %s)", at, src, dst)
	}
	if tn.Status != tenancy.StatusActive && tn.Status != tenancy.StatusMoving {
		t.Fatalf("tenant %s is %s after a killed move", slug, tn.Status)
	}
	if n, err := rowsAt(servers[at.Server], at, tn.ID); err != nil || n != rows {
		t.Fatalf("move %s killed: the catalog's placement %s holds %d of %d rows (%v)", state, at, n, rows, err)
	}
	accepting := 0
	for _, p := range []tenancy.Placement{src, dst} {
		if accepts(t, servers[p.Server], p, tn.ID) {
			accepting++
		}
	}
	if accepting > 1 {
		t.Fatalf("move %s killed: both %s and %s accept the tenant", state, src, dst)
	}
	if accepts(t, servers[at.Server], at, tn.ID) {
		b.checkServed(t, slug, rows)
		return fmt.Sprintf("move %s, served at %s", state, at)
	}
	if state == "done" || state == "rolled_back" {
		t.Fatalf("move %s: the catalog's placement %s refuses the tenant", state, at)
	}
	return fmt.Sprintf("move %s, refused at %s (fenced) until the move runs again", state, at)
}

// rowsAt counts the tenant's contacts at placement p of server s.
func rowsAt(s *pgtest.Server, p tenancy.Placement, tenant uuid.UUID) (int, error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.URL(p.Database))
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{p.Schema, "contacts"}.Sanitize()+` WHERE tenant_id = $1`, tenant).Scan(&n)
	return n, err
}

// accepts reports whether placement p of server s would serve the tenant's
// transactions: its tables exist, granted to the tenant's role (the shared
// tables serve every tenant through Row-Level Security, without a role of
// its own), and its database does not mark it as moved away or still
// arriving (which the router's tenancy.enter refuses).
func accepts(t *testing.T, s *pgtest.Server, p tenancy.Placement, tenant uuid.UUID) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL(p.Database))
	if err != nil {
		return false // no such database (any more, or yet)
	}
	defer conn.Close(ctx)
	table := pgx.Identifier{p.Schema, "contacts"}.Sanitize()
	var ok bool
	err = conn.QueryRow(ctx, `SELECT CASE WHEN to_regclass($1) IS NULL THEN false WHEN $3 THEN true
		WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) THEN false
		ELSE has_table_privilege($2, to_regclass($1), 'SELECT') END`, table, tenancy.RoleName(tenant), p.Schema == provision.SharedSchema).Scan(&ok)
	if err != nil {
		t.Fatalf("look at %s on %s: %v", p, s.Name(), err)
	}
	if !ok {
		return false
	}
	var fenced, marked bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('tenancy.moved') IS NOT NULL`).Scan(&fenced); err != nil {
		t.Fatal(err)
	}
	if !fenced {
		return true
	}
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenancy.moved WHERE tenant = $1 AND schema = $2)`, tenant, p.Schema).Scan(&marked); err != nil {
		t.Fatal(err)
	}
	return !marked
}
