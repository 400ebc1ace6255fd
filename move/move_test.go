package move_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/move"
	"github.com/tenancyhq/tenancy/router"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testBundle is a platform on two servers and a mover.
type testBundle struct {
	*tenanttest.Bundle
	mover *move.Mover
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := tenanttest.Setup(t, &tenanttest.Opts{Servers: 2})
	p := b.Platform
	m, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model, FenceTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBundle{Bundle: b, mover: m}
	return tb
}

// create makes a tenant of model on server, with data (some soft-deleted) and
// drops, when the test ends, whatever storage a move gave it.
func (b *testBundle) create(t *testing.T, model tenancy.Model, server string, contacts int) *tenancy.Tenant {
	t.Helper()
	tn := b.CreateTenant(t, model, server)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, s := range b.Servers {
			conn, err := pgx.Connect(ctx, s.URL("postgres"))
			if err != nil {
				continue
			}
			_ = dataplane.DropDatabase(ctx, conn, "tenant_"+strings.ReplaceAll(tn.Slug, "-", "_"))
			_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+dataplane.Ident(tn.Role()))
			conn.Close(ctx)
		}
	})
	err := b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		ctx := context.Background()
		var company int64
		if err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name, domain) VALUES ($1, 'Acme', 'acme.test') RETURNING id`, tn.ID).Scan(&company); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, company_id, name, email)
			SELECT $1, $2, 'person ' || i, 'seed' || i || '@acme.test' FROM generate_series(1, $3::int) i`, tn.ID, company, contacts); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deals (tenant_id, contact_id, title, amount)
			SELECT tenant_id, id, 'deal ' || id, id * 10.5 FROM contacts WHERE tenant_id = $1 AND id % 3 = 0`, tn.ID); err != nil {
			return err
		}
		// Soft-deleted rows move too.
		_, err := tx.Exec(ctx, `DELETE FROM contacts WHERE email = 'seed2@acme.test'`)
		return err
	})
	if err != nil {
		t.Fatalf("seed %s: %v", tn.Slug, err)
	}
	return tn
}

// load runs writers on a tenant through the router until stopped, and
// records every write that was acknowledged.
type load struct {
	mu      sync.Mutex
	acked   map[string]bool // email → soft-deleted
	errs    []error
	maxWait time.Duration
	slowest time.Time // when the slowest transaction started
	txs     int
	spans   [][2]time.Time // every transaction's start and end

	stop chan struct{}
	wg   sync.WaitGroup
}

func startLoad(b *testBundle, tn *tenancy.Tenant, writers int) *load {
	l := &load{acked: map[string]bool{}, stop: make(chan struct{})}
	for w := range writers {
		l.wg.Go(func() {
			ctx := tenanttest.Ctx(tn)
			for k := 0; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				email := fmt.Sprintf("w%d-%d@load.test", w, k)
				del := k%4 == 3
				start := time.Now()
				if w == 2 {
					// The third client reads in REPEATABLE READ transactions,
					// whose snapshot predates a wait at the fence. (Writers
					// would fail with 40001 without a move: each takes the
					// audit chain head's lock at commit.)
					err := b.Platform.Router.TxWith(ctx, &router.TxOpts{IsoLevel: pgx.RepeatableRead, ReadOnly: true}, func(tx pgx.Tx) error {
						var n int
						return tx.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&n)
					})
					l.record(start, time.Since(start), "", false, err)
					continue
				}
				err := b.Platform.Router.Tx(ctx, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, $2, $3)`, tn.ID, "writer", email); err != nil {
						return err
					}
					if del {
						_, err := tx.Exec(ctx, `DELETE FROM contacts WHERE email = $1`, email)
						return err
					}
					_, err := tx.Exec(ctx, `UPDATE companies SET domain = $1 WHERE name = 'Acme'`, email)
					return err
				})
				l.record(start, time.Since(start), email, del, err)
			}
		})
	}
	return l
}

// record notes one transaction: a write of email when not empty.
func (l *load) record(start time.Time, d time.Duration, email string, del bool, err error) {
	l.mu.Lock()
	l.txs++
	l.spans = append(l.spans, [2]time.Time{start, start.Add(d)})
	if d > l.maxWait {
		l.maxWait, l.slowest = d, start
	}
	if err != nil {
		l.errs = append(l.errs, err)
	} else if email != "" {
		l.acked[email] = del
	}
	l.mu.Unlock()
	time.Sleep(time.Millisecond)
}

// slowestDuring is the longest transaction that overlapped [from, to].
func (l *load) slowestDuring(from, to time.Time) time.Duration {
	var worst time.Duration
	for _, s := range l.spans {
		if s[0].Before(to) && s[1].After(from) {
			worst = max(worst, s[1].Sub(s[0]))
		}
	}
	return worst
}

// finish stops the writers; any failed write fails the test: writers wait
// during a move, they do not fail. With unavailable, writes refused with
// CodeUnavailable are expected (a move interrupted between marking and
// switching).
func (l *load) finish(t *testing.T, unavailable bool) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	refused := 0
	for _, err := range l.errs {
		if unavailable && tenancy.ErrorCode(err) == tenancy.CodeUnavailable {
			refused++
			continue
		}
		t.Errorf("a write failed during the move: %v", err)
	}
	if refused > 0 {
		t.Logf("%d writes refused as unavailable", refused)
	}
	t.Logf("%d transactions, %d acknowledged, slowest %s", l.txs, len(l.acked), l.maxWait.Round(time.Millisecond))
}

// tenantRows reads through the router every contact whose email ends with
// suffix, deleted ones included: email → deleted, and how often each appears.
func tenantRows(t *testing.T, b *testBundle, tn *tenancy.Tenant, suffix string) (map[string]bool, map[string]int) {
	t.Helper()
	seen, times := map[string]bool{}, map[string]int{}
	err := b.Platform.Router.TxWith(tenanttest.Ctx(tn), &router.TxOpts{IncludeDeleted: true}, func(tx pgx.Tx) error {
		rows, err := tx.Query(context.Background(), `SELECT email, deleted_at IS NOT NULL FROM contacts WHERE email LIKE '%' || $1`, suffix)
		if err != nil {
			return err
		}
		var email string
		var deleted bool
		_, err = pgx.ForEachRow(rows, []any{&email, &deleted}, func() error {
			seen[email] = deleted
			times[email]++
			return nil
		})
		return err
	})
	if err != nil {
		t.Fatalf("read %s's contacts: %v", tn.Slug, err)
	}
	return seen, times
}

// fingerprint is every row of the tenant's tables at placement p (audit log
// and chain head included), read as the superuser.
func fingerprint(t *testing.T, b *testBundle, tn *tenancy.Tenant, p tenancy.Placement) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), b.Server(p.Server).URL(p.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `SET TimeZone = 'UTC'`); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, table := range []string{"companies", "contacts", "deals", dataplane.AuditTable, dataplane.AuditHeadTable} {
		var all string
		var n int
		err := conn.QueryRow(context.Background(), fmt.Sprintf(
			`SELECT count(*), coalesce(string_agg(x::text, ';' ORDER BY x::text), '') FROM %s x WHERE tenant_id = $1`,
			dataplane.Ident(p.Schema, table)), tn.ID).Scan(&n, &all)
		if err != nil {
			t.Fatalf("fingerprint %s at %s: %v", table, p, err)
		}
		fmt.Fprintf(&sb, "%s(%d)[%s]\n", table, n, all)
	}
	return sb.String()
}

// checkMoved checks a tenant after a move under load: it is placed at the
// destination and served there; every acknowledged write is there exactly
// once and nothing else; its audit log verifies; another tenant cannot
// read it; new rows get new ids.
func checkMoved(t *testing.T, b *testBundle, tn *tenancy.Tenant, l *load, model tenancy.Model, server string) *tenancy.Tenant {
	t.Helper()
	ctx := context.Background()
	now, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if now.Model != model || now.Placement.Server != server || now.Status != tenancy.StatusActive {
		t.Fatalf("after the move: %s on %s, %s; want %s on %s, active", now.Model, now.Placement, now.Status, model, server)
	}
	events, _, err := b.Platform.Catalog.Events(ctx, &catalog.EventOpts{TenantID: tn.ID, Kind: catalog.EventMoved})
	if err != nil || len(events) == 0 {
		t.Errorf("the control plane's log has no move of the tenant (%v)", err)
	}
	seen, times := tenantRows(t, b, tn, "@load.test")
	for email, del := range l.acked {
		switch {
		case times[email] == 0:
			t.Errorf("acknowledged write %s is lost", email)
		case times[email] > 1:
			t.Errorf("acknowledged write %s is there %d times", email, times[email])
		case seen[email] != del:
			t.Errorf("%s: deleted %v, want %v", email, seen[email], del)
		}
	}
	for email := range seen {
		if _, ok := l.acked[email]; !ok {
			t.Errorf("%s is there but its write was never acknowledged", email)
		}
	}
	seeded, _ := tenantRows(t, b, tn, "@acme.test")
	if len(seeded) != 40 || !seeded["seed2@acme.test"] {
		t.Errorf("seeded contacts: %d (seed2 deleted: %v), want 40 with seed2 deleted", len(seeded), seeded["seed2@acme.test"])
	}

	conn, err := pgx.Connect(ctx, b.Server(now.Placement.Server).URL(now.Placement.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	v, err := audit.Verify(ctx, conn, now.Placement.Schema, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || !v.HeadChecked || v.Entries == 0 {
		t.Errorf("audit log at the destination: %+v", v)
	}

	// New rows at the destination take ids after the moved ones.
	err = b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		var id, top int64
		if err := tx.QueryRow(ctx, `SELECT max(id) FROM contacts`).Scan(&top); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'after', 'after@move.test') RETURNING id`, tn.ID).Scan(&id); err != nil {
			return err
		}
		if id <= top {
			t.Errorf("new contact id %d, want more than %d", id, top)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write after the move: %v", err)
	}

	// Isolation holds at the destination: a neighbour sees none of it.
	other := b.CreateTenant(t, model, server)
	err = b.Platform.Router.TxWith(tenanttest.Ctx(other), &router.TxOpts{IncludeDeleted: true}, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM contacts WHERE tenant_id = $1`, tn.ID).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			t.Errorf("another tenant reads %d of the moved tenant's contacts", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if model == tenancy.ModelSchema {
		err = b.Platform.Router.Tx(tenanttest.Ctx(other), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT count(*) FROM `+dataplane.Ident(now.Placement.Schema, "contacts"))
			return err
		})
		if err == nil {
			t.Errorf("another tenant reads the moved tenant's schema")
		}
	}
	return now
}

// TestMoveDirections moves a tenant in each of the six directions between
// models, and between servers, while writers keep working.
func TestMoveDirections(t *testing.T) {
	t.Parallel()
	type direction struct {
		from, to tenancy.Model
		across   bool // to the other server
	}
	var cases []direction
	for _, from := range tenancy.Models {
		for _, to := range tenancy.Models {
			if from != to {
				cases = append(cases, direction{from, to, false})
			}
		}
		cases = append(cases, direction{from, from, true})
	}
	b := setup(t)
	for _, c := range cases {
		name := string(c.from) + "_to_" + string(c.to)
		if c.across {
			name += "_across_servers"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tn := b.create(t, c.from, b.ServerNames[0], 40)
			dst := b.ServerNames[0]
			if c.across {
				dst = b.ServerNames[1]
			}
			l := startLoad(b, tn, 3)
			time.Sleep(100 * time.Millisecond)
			res, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: c.to, Server: dst, KeepSource: true})
			time.Sleep(100 * time.Millisecond) // writers go on at the destination
			l.finish(t, false)
			if err != nil {
				t.Fatalf("move: %v", err)
			}
			t.Logf("copied %d rows (%d bytes) in %s, pause %s, %d rows under the fence",
				res.Rows, res.Bytes, res.Copy.Round(time.Millisecond), res.Pause.Round(time.Millisecond), res.FenceRows)
			if res.State != move.Done {
				t.Errorf("state %s, want done", res.State)
			}
			checkMoved(t, b, tn, l, c.to, dst)
			// The source refuses the tenant: a transaction sent there is
			// refused with TN001.
			checkRefused(t, b, tn, res.From, res.FromModel)
		})
	}
}

// checkRefused runs, on the tenant's old placement, what the router runs
// first in a tenant transaction, and expects it refused.
func checkRefused(t *testing.T, b *testBundle, tn *tenancy.Tenant, p tenancy.Placement, model tenancy.Model) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.Server(p.Server).URL(p.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT tenancy.enter($1, $2)`, tn.ID, p.Schema)
	if err == nil || !strings.Contains(err.Error(), "TN001") {
		t.Errorf("the old placement (%s) lets the tenant in: %v", p, err)
	}
}

// TestMoveKeepsEverything moves a tenant with no writers and compares every
// row of every table, audit log and chain head included, at the source and
// the destination.
func TestMoveKeepsEverything(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 300)
	for _, to := range []struct {
		model  tenancy.Model
		server string
	}{{tenancy.ModelSchema, b.ServerNames[1]}, {tenancy.ModelDatabase, b.ServerNames[0]}, {tenancy.ModelShared, b.ServerNames[1]}} {
		before, err := b.Platform.Catalog.Tenant(ctx, tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := fingerprint(t, b, tn, before.Placement)
		res, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: to.model, Server: to.server, KeepSource: true})
		if err != nil {
			t.Fatalf("move to %s on %s: %v", to.model, to.server, err)
		}
		if got := fingerprint(t, b, tn, res.Tenant.Placement); got != want {
			t.Errorf("move to %s: the destination differs from the source:\n%s\nwant\n%s", to.model, got, want)
		}
		if got := fingerprint(t, b, tn, before.Placement); got != want {
			t.Errorf("move to %s: the kept source changed", to.model)
		}
		// A kept schema or database would block a later move to its name;
		// drop it as an operator would.
		dropKept(t, b, before)
	}
}

func dropKept(t *testing.T, b *testBundle, p *tenancy.Tenant) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.Server(p.Placement.Server).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	switch p.Model {
	case tenancy.ModelDatabase:
		if err := dataplane.DropDatabase(ctx, conn, p.Placement.Database); err != nil {
			t.Fatal(err)
		}
	case tenancy.ModelSchema:
		c2, err := pgx.Connect(ctx, b.Server(p.Placement.Server).URL(p.Placement.Database))
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close(ctx)
		if _, err := c2.Exec(ctx, "DROP SCHEMA "+dataplane.Ident(p.Placement.Schema)+" CASCADE"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMoveRemovesSource: by default the source is removed once the switch is
// done, and the tenant's old placement keeps refusing it.
func TestMoveRemovesSource(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, from := range tenancy.Models {
		tn := b.create(t, from, b.ServerNames[0], 10)
		to := tenancy.ModelDatabase
		if from == tenancy.ModelDatabase {
			to = tenancy.ModelSchema
		}
		res, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: to})
		if err != nil {
			t.Fatalf("move %s: %v", from, err)
		}
		conn, err := pgx.Connect(ctx, b.Server(res.From.Server).URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var exists bool
		switch from {
		case tenancy.ModelDatabase:
			err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, res.From.Database).Scan(&exists)
		default:
			c2, cerr := pgx.Connect(ctx, b.Server(res.From.Server).URL(res.From.Database))
			if cerr != nil {
				t.Fatal(cerr)
			}
			if from == tenancy.ModelSchema {
				err = c2.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, res.From.Schema).Scan(&exists)
			} else {
				err = c2.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM shared.contacts WHERE tenant_id = $1)
					OR EXISTS (SELECT 1 FROM shared.tenancy_audit WHERE tenant_id = $1)`, tn.ID).Scan(&exists)
			}
			c2.Close(ctx)
		}
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("%s source %s still exists after the move", from, res.From)
		}
		if from != tenancy.ModelDatabase {
			checkRefused(t, b, tn, res.From, from)
		}
		// The tenant works at its destination.
		if _, times := tenantRows(t, b, tn, "@acme.test"); len(times) != 10 {
			t.Errorf("%s: %d seeded contacts at the destination, want 10", from, len(times))
		}
	}
}

// TestMoveBadInput: each bad request fails with its code and changes nothing.
func TestMoveBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.create(t, tenancy.ModelSchema, b.ServerNames[0], 5)
	suspended := b.create(t, tenancy.ModelShared, b.ServerNames[0], 5)
	if _, err := b.Platform.Catalog.SetStatus(ctx, suspended.ID, tenancy.StatusSuspended, tenancy.StatusActive); err != nil {
		t.Fatal(err)
	}
	before := catalogState(t, b)
	for _, c := range []struct {
		name string
		slug string
		opts *move.Opts
		code tenancy.Code
	}{
		{"NoOpts", tn.Slug, nil, tenancy.CodeInvalid},
		{"UnknownModel", tn.Slug, &move.Opts{To: "cluster"}, tenancy.CodeInvalid},
		{"MalformedSlug", "Not A Slug", &move.Opts{To: tenancy.ModelShared}, tenancy.CodeInvalid},
		{"UnknownSlug", "nobody-here", &move.Opts{To: tenancy.ModelShared}, tenancy.CodeNotFound},
		{"UnknownServer", tn.Slug, &move.Opts{To: tenancy.ModelShared, Server: "pg-nowhere"}, tenancy.CodeNotFound},
		{"MalformedServer", tn.Slug, &move.Opts{To: tenancy.ModelShared, Server: "no way"}, tenancy.CodeInvalid},
		{"SamePlacement", tn.Slug, &move.Opts{To: tenancy.ModelSchema}, tenancy.CodeInvalid},
		{"SamePlacementNamedServer", tn.Slug, &move.Opts{To: tenancy.ModelSchema, Server: b.ServerNames[0]}, tenancy.CodeInvalid},
		{"NotActive", suspended.Slug, &move.Opts{To: tenancy.ModelSchema}, tenancy.CodeConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.mover.Move(ctx, c.slug, c.opts)
			tenanttest.WantCode(t, "move", err, c.code)
		})
	}
	if after := catalogState(t, b); after != before {
		t.Errorf("bad input changed the catalog:\n%s\nwas\n%s", after, before)
	}
}

// catalogState is the tenants and moves of the catalog, as text.
func catalogState(t *testing.T, b *testBundle) string {
	t.Helper()
	var s string
	err := b.Platform.Catalog.Pool().QueryRow(context.Background(), `SELECT
		coalesce((SELECT string_agg(x::text, ';' ORDER BY id) FROM catalog.tenants x), '') || '|' ||
		coalesce((SELECT string_agg(y::text, ';' ORDER BY id) FROM catalog.moves y), '')`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMoveCrashAtEachStep stops a move after each of its steps, as if the
// process had been killed, under writers: the tenant is then served from
// exactly one place (the source before the switch, the destination after),
// and running the move again converges with nothing lost.
func TestMoveCrashAtEachStep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, step := range []string{"started", "prepared", "bulk", "copied", "fenced", "marked", "switched", "dropped"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := b.Platform
			crashing, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model})
			if err != nil {
				t.Fatal(err)
			}
			move.SetHook(crashing, func(s string) error {
				if s == step {
					return errors.New("killed")
				}
				return nil
			})
			tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 40)
			opts := &move.Opts{To: tenancy.ModelDatabase, Server: b.ServerNames[1]}
			l := startLoad(b, tn, 2)
			time.Sleep(50 * time.Millisecond)
			_, err = crashing.Move(ctx, tn.Slug, opts)
			if !errors.Is(err, move.ErrStop) {
				t.Fatalf("move stopped at %s: got %v", step, err)
			}
			time.Sleep(50 * time.Millisecond)

			// Served from exactly one place.
			now, err := p.Catalog.Tenant(ctx, tn.ID)
			if err != nil {
				t.Fatal(err)
			}
			switched := step == "switched" || step == "dropped"
			if wantDB := switched; (now.Model == tenancy.ModelDatabase) != wantDB {
				t.Fatalf("after a crash at %s the catalog places the tenant at %s (%s)", step, now.Placement, now.Model)
			}
			werr := p.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `UPDATE companies SET domain = 'crash.test' WHERE name = $1`, "Acme")
				return err
			})
			if step == "marked" {
				// Marked moved away, not yet switched: refused everywhere
				// until the move is run again.
				tenanttest.WantCode(t, "write after a crash between marking and switching", werr, tenancy.CodeUnavailable)
			} else if werr != nil {
				t.Fatalf("write after a crash at %s: %v", step, werr)
			}
			if switched {
				checkRefused(t, b, tn, tenancy.Placement{Server: b.ServerNames[0], Database: tn.Placement.Database, Schema: tn.Placement.Schema}, tenancy.ModelShared)
			}

			// Run again: it converges.
			res, err := b.mover.Move(ctx, tn.Slug, opts)
			if err != nil {
				t.Fatalf("move again after a crash at %s: %v", step, err)
			}
			if !res.Resumed && switched {
				t.Errorf("the move after the switch was not resumed")
			}
			time.Sleep(50 * time.Millisecond)
			l.finish(t, step == "marked")
			checkMoved(t, b, tn, l, tenancy.ModelDatabase, b.ServerNames[1])
			var open int
			if err := p.Catalog.Pool().QueryRow(ctx, `SELECT count(*) FROM catalog.moves WHERE tenant_id = $1 AND state NOT IN ('done', 'rolled_back')`, tn.ID).Scan(&open); err != nil || open != 0 {
				t.Errorf("%d moves left unfinished (%v)", open, err)
			}
			// The source is gone: no row of the tenant in the shared tables.
			conn, err := pgx.Connect(ctx, b.Server(b.ServerNames[0]).URL(tn.Placement.Database))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var left int
			if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM shared.contacts WHERE tenant_id = $1) + (SELECT count(*) FROM shared.tenancy_audit WHERE tenant_id = $1)`, tn.ID).Scan(&left); err != nil || left != 0 {
				t.Errorf("%d rows left at the source (%v)", left, err)
			}
		})
	}
}

// TestMoveVerifyMismatchRollsBack tampers with the destination where each
// verification looks, and expects the move rolled back, the tenant served at
// its source with everything it had.
func TestMoveVerifyMismatchRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, c := range []struct {
		step     string
		tamper   string
		atSource bool // tamper with the source instead, where the audit log does not see it
	}{
		// After the bulk copy: any row, checked against the snapshot.
		{"bulk", `UPDATE contacts SET name = 'tampered' WHERE email = 'seed7@acme.test'`, false},
		// Under the fence: a row changed since the bulk copy, checked by content.
		{"fenced", `UPDATE companies SET name = 'tampered'`, false},
		// After the bulk copy: an extra row, checked by count.
		{"bulk", `INSERT INTO contacts (tenant_id, id, name, email) OVERRIDING SYSTEM VALUE SELECT tenant_id, 999999, 'extra', 'extra@x.test' FROM companies`, false},
		// A row removed at the source behind the audit log's back, during the
		// copy: the catch-up round's counts see it.
		{"bulk", `DELETE FROM contacts WHERE email = 'seed9@acme.test'`, true},
	} {
		t.Run(c.step, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := b.Platform
			tn := b.create(t, tenancy.ModelSchema, b.ServerNames[0], 20)
			m, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model})
			if err != nil {
				t.Fatal(err)
			}
			dst := tenancy.Placement{Server: b.ServerNames[1], Database: "tenant_" + strings.ReplaceAll(tn.Slug, "-", "_"), Schema: "tenant"}
			move.SetHook(m, func(s string) error {
				switch {
				case s == "bulk":
					// A change after the bulk copy, so that the fence has
					// rows to check by content.
					if err := p.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
						_, err := tx.Exec(ctx, `UPDATE companies SET domain = 'changed.test'`)
						return err
					}); err != nil {
						return err
					}
				}
				if s != c.step {
					return nil
				}
				where := dst
				if c.atSource {
					where = tn.Placement
				}
				conn, err := pgx.Connect(ctx, b.Server(where.Server).URL(where.Database))
				if err != nil {
					return err
				}
				defer conn.Close(ctx)
				_, err = conn.Exec(ctx, `SET session_replication_role = replica; SET search_path = `+dataplane.Ident(where.Schema)+`; `+c.tamper)
				return err
			})
			before := fingerprint(t, b, tn, tn.Placement)
			_, err = m.Move(ctx, tn.Slug, &move.Opts{To: tenancy.ModelDatabase, Server: dst.Server})
			if !errors.Is(err, move.ErrMismatch) {
				t.Fatalf("move with a tampered destination (%s): got %v, want a mismatch", c.tamper, err)
			}
			now, err := p.Catalog.Tenant(ctx, tn.ID)
			if err != nil {
				t.Fatal(err)
			}
			if now.Placement != tn.Placement || now.Status != tenancy.StatusActive {
				t.Errorf("after a failed verification the tenant is at %s, %s", now.Placement, now.Status)
			}
			// The source holds what it held, with the change made during the move.
			if after := fingerprint(t, b, tn, tn.Placement); after == before || !strings.Contains(after, "changed.test") {
				t.Errorf("the source lost the change made during the move")
			}
			conn, err := pgx.Connect(ctx, b.Server(dst.Server).URL("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var exists bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, dst.Database).Scan(&exists); err != nil || exists {
				t.Errorf("the destination database is left after the roll back (%v)", err)
			}
			if err := p.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'still', 'still@here.test')`, tn.ID)
				return err
			}); err != nil {
				t.Errorf("the tenant is not served at its source after the roll back: %v", err)
			}
		})
	}
}

// TestMoveRepeatableReadWriter: a writer in REPEATABLE READ transactions
// took its snapshot before it waited at the fence, so it cannot see the
// source's mark; it must be refused there and run again at the destination.
// (One writer only: two would conflict on the audit chain head, move or not.)
func TestMoveRepeatableReadWriter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 40)
	l := &load{acked: map[string]bool{}, stop: make(chan struct{})}
	l.wg.Go(func() {
		for k := 0; ; k++ {
			select {
			case <-l.stop:
				return
			default:
			}
			email := fmt.Sprintf("rr-%d@load.test", k)
			start := time.Now()
			err := b.Platform.Router.TxWith(tenanttest.Ctx(tn), &router.TxOpts{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'rr', $2)`, tn.ID, email)
				return err
			})
			l.record(start, time.Since(start), email, false, err)
		}
	})
	time.Sleep(100 * time.Millisecond)
	_, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: tenancy.ModelSchema, KeepSource: true})
	time.Sleep(100 * time.Millisecond)
	l.finish(t, false)
	if err != nil {
		t.Fatal(err)
	}
	checkMoved(t, b, tn, l, tenancy.ModelSchema, b.ServerNames[0])
}

// TestChangeTier: changing a tenant's tier moves it to the tier's model.
func TestChangeTier(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 10)
	for _, c := range []struct {
		tier   tenancy.Tier
		server string
		model  tenancy.Model
		moved  bool
	}{
		{"pro", "", tenancy.ModelSchema, true},
		{"enterprise", b.ServerNames[1], tenancy.ModelDatabase, true},
		{"custom", "", tenancy.ModelDatabase, false}, // no policy for it: the tier changes, not the model
		{"free", b.ServerNames[0], tenancy.ModelShared, true},
		{"free", "", tenancy.ModelShared, false},
	} {
		now, res, err := b.mover.ChangeTier(ctx, tn.Slug, c.tier, nil, &move.Opts{Server: c.server})
		if err != nil {
			t.Fatalf("tier %s: %v", c.tier, err)
		}
		if now.Tier != c.tier || now.Model != c.model || (res != nil) != c.moved {
			t.Errorf("tier %s: got tier %s, model %s, moved %v; want model %s, moved %v", c.tier, now.Tier, now.Model, res != nil, c.model, c.moved)
		}
		if _, times := tenantRows(t, b, tn, "@acme.test"); len(times) != 10 {
			t.Errorf("tier %s: %d contacts, want 10", c.tier, len(times))
		}
	}
	before := catalogState(t, b)
	_, _, err := b.mover.ChangeTier(ctx, "nobody-here", "pro", nil, nil)
	tenanttest.WantCode(t, "unknown tenant", err, tenancy.CodeNotFound)
	_, _, err = b.mover.ChangeTier(ctx, tn.Slug, "Not A Tier", nil, nil)
	tenanttest.WantCode(t, "malformed tier", err, tenancy.CodeInvalid)
	_, _, err = b.mover.ChangeTier(ctx, tn.Slug, "pro", nil, &move.Opts{Server: "pg-nowhere"})
	tenanttest.WantCode(t, "unknown server", err, tenancy.CodeNotFound)
	_, _, err = b.mover.ChangeTier(ctx, tn.Slug, "pro", move.TierPolicy{"pro": "cluster"}, nil)
	tenanttest.WantCode(t, "unknown model in the policy", err, tenancy.CodeInvalid)
	if after := catalogState(t, b); after != before {
		t.Errorf("bad input changed the catalog")
	}
}

// TestMoveMigrationDuringMove: a fleet migration reaches the source's shared
// tables while the tenant moves; the move notices under the fence and rolls
// back instead of switching to tables of another version.
func TestMoveMigrationDuringMove(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p := b.Platform
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 10)
	files := fstest.MapFS{"999_extra.sql": {Data: []byte("ALTER TABLE contacts ADD COLUMN extra text;\n")}}
	if err := fs.WalkDir(crm.Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(crm.Migrations(), path)
		files[path] = &fstest.MapFile{Data: data}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	newer, err := datamodel.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	m, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model})
	if err != nil {
		t.Fatal(err)
	}
	move.SetHook(m, func(step string) error {
		if step != "fenced" {
			return nil
		}
		conn, err := pgx.Connect(ctx, b.Server(tn.Placement.Server).URL(tn.Placement.Database))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := newer.ApplyTx(ctx, tx, datamodel.Target{Schema: tn.Placement.Schema, Grantee: b.AppRole})
			return err
		})
	})
	_, err = m.Move(ctx, tn.Slug, &move.Opts{To: tenancy.ModelSchema})
	tenanttest.WantCode(t, "move across a migration", err, tenancy.CodeConflict)
	now, err := p.Catalog.Tenant(ctx, tn.ID)
	if err != nil || now.Placement != tn.Placement || now.Status != tenancy.StatusActive {
		t.Errorf("after the refused move: %+v %v", now, err)
	}
}

// TestMoveBehindPgBouncer: the router reaches the servers through PgBouncer
// in transaction mode (the mover connects directly); the fence still holds
// writers, which then run at the new placement.
func TestMoveBehindPgBouncer(t *testing.T) {
	t.Parallel()
	bundle := tenanttest.Setup(t, &tenanttest.Opts{Servers: 2, PgBouncer: true})
	p := bundle.Platform
	m, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model})
	if err != nil {
		t.Fatal(err)
	}
	b := &testBundle{Bundle: bundle, mover: m}
	ctx := context.Background()
	for _, to := range []struct {
		model  tenancy.Model
		server string
	}{{tenancy.ModelSchema, b.ServerNames[0]}, {tenancy.ModelDatabase, b.ServerNames[1]}} {
		tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 40)
		l := startLoad(b, tn, 2)
		time.Sleep(100 * time.Millisecond)
		res, err := m.Move(ctx, tn.Slug, &move.Opts{To: to.model, Server: to.server})
		time.Sleep(100 * time.Millisecond)
		l.finish(t, false)
		if err != nil {
			t.Fatalf("move to %s: %v", to.model, err)
		}
		t.Logf("to %s: pause %s", to.model, res.Pause.Round(time.Millisecond))
		checkMoved(t, b, tn, l, to.model, to.server)
	}
}

// TestMoveSwitchAnswerLost: the catalog commits the switch of the placement
// but the mover sees an error (the answer to COMMIT lost with the
// connection). The mover reads the outcome instead of rolling back, which
// would drop the destination that the catalog names and that writers, let go
// by the fence, already use: the move ends done with every acknowledged
// write there.
func TestMoveSwitchAnswerLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.Platform
	m, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model})
	if err != nil {
		t.Fatal(err)
	}
	move.SetHook(m, func(s string) error {
		if s == "switch-answer" {
			return errors.New("connection reset by peer")
		}
		return nil
	})
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 40)
	l := startLoad(b, tn, 2)
	time.Sleep(50 * time.Millisecond)
	res, err := m.Move(context.Background(), tn.Slug, &move.Opts{To: tenancy.ModelDatabase, Server: b.ServerNames[1]})
	time.Sleep(50 * time.Millisecond)
	l.finish(t, false)
	if err != nil || res.State != move.Done {
		t.Fatalf("move whose switch's answer was lost: %+v %v", res, err)
	}
	checkMoved(t, b, tn, l, tenancy.ModelDatabase, b.ServerNames[1])
}
