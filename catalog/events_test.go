package catalog_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// TestEvents records control-plane events with who and from where from the
// context, lists them with every filter and the cursor, and checks that the
// log is append-only and that verify finds an altered, a removed and a
// truncated chain.
func TestEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	acme, globex := b.createTenant(t, tenancy.ModelShared), b.createTenant(t, tenancy.ModelSchema)
	alice := tenancy.WithClient(tenancy.WithActor(context.Background(), tenancy.Actor{Kind: "operator", ID: "alice"}), tenancy.Client{IP: "203.0.113.7"})
	bob := tenancy.WithActor(context.Background(), tenancy.Actor{Kind: "operator", ID: "bob"})
	record := func(ctx context.Context, kind catalog.EventKind, tn *tenancy.Tenant, details any) *catalog.Event {
		t.Helper()
		e := &catalog.Event{Kind: kind}
		if tn != nil {
			e.TenantID, e.TenantSlug = tn.ID, tn.Slug
		}
		if err := b.cat.RecordEvent(ctx, e, details); err != nil {
			t.Fatalf("record %s: %v", kind, err)
		}
		return e
	}
	first := record(alice, catalog.EventTenantCreated, acme, map[string]string{"model": "shared"})
	record(bob, catalog.EventTenantCreated, globex, nil)
	mid := time.Now()
	time.Sleep(5 * time.Millisecond)
	record(alice, catalog.EventSuspended, acme, nil)
	record(bob, catalog.EventMigrated, nil, map[string]int{"migrated": 3})
	record(alice, catalog.EventResumed, acme, nil)
	if first.Seq != 1 || first.Operator != "operator:alice" || first.ClientIP != "203.0.113.7" {
		t.Fatalf("first event %+v", first)
	}

	ctx := context.Background()
	list := func(opts *catalog.EventOpts) (kinds []string, next int64) {
		t.Helper()
		es, next, err := b.cat.Events(ctx, opts)
		if err != nil {
			t.Fatalf("Events(%+v): %v", opts, err)
		}
		for _, e := range es {
			kinds = append(kinds, string(e.Kind))
		}
		return kinds, next
	}
	for _, c := range []struct {
		name string
		opts *catalog.EventOpts
		want string
	}{
		{"All", nil, "tenant_created tenant_created suspended migrated resumed"},
		{"Tenant", &catalog.EventOpts{TenantID: acme.ID}, "tenant_created suspended resumed"},
		{"Kind", &catalog.EventOpts{Kind: catalog.EventTenantCreated}, "tenant_created tenant_created"},
		{"Operator", &catalog.EventOpts{Operator: "operator:bob"}, "tenant_created migrated"},
		{"Since", &catalog.EventOpts{Since: mid}, "suspended migrated resumed"},
		{"Until", &catalog.EventOpts{Until: mid}, "tenant_created tenant_created"},
		{"Cursor", &catalog.EventOpts{After: 3}, "migrated resumed"},
	} {
		if got, _ := list(c.opts); strings.Join(got, " ") != c.want {
			t.Errorf("%s: %v, want %s", c.name, got, c.want)
		}
	}
	// Pages of two follow each other to the end.
	var pages []string
	opts := &catalog.EventOpts{Limit: 2}
	for {
		got, next := list(opts)
		pages = append(pages, strings.Join(got, ","))
		if next == 0 {
			break
		}
		opts.After = next
	}
	if strings.Join(pages, " | ") != "tenant_created,tenant_created | suspended,migrated | resumed" {
		t.Errorf("pages: %v", pages)
	}
	es, _, _ := b.cat.Events(ctx, &catalog.EventOpts{Kind: catalog.EventMigrated})
	var details map[string]int
	if len(es) != 1 || json.Unmarshal(es[0].Details, &details) != nil || details["migrated"] != 3 || es[0].TenantSlug != "" {
		t.Fatalf("migrated event: %+v", es)
	}
	for _, bad := range []*catalog.EventOpts{{Limit: 1001}, {Limit: -1}, {After: -1}} {
		_, _, err := b.cat.Events(ctx, bad)
		tenanttest.WantCode(t, "Events with bad options", err, tenancy.CodeInvalid)
	}

	verify := func() *catalog.EventsVerification {
		t.Helper()
		v, err := b.cat.VerifyEvents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := verify(); !v.OK || v.Events != 5 {
		t.Fatalf("verify an intact log: %+v", v)
	}

	// Append-only, for the catalog's owner too (short of disabling the
	// triggers, which verify then catches).
	for _, sql := range []string{
		`UPDATE catalog.events SET operator = 'operator:mallory' WHERE seq = 3`,
		`DELETE FROM catalog.events WHERE seq = 3`,
		`TRUNCATE catalog.events`,
	} {
		if _, err := b.cat.Pool().Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Fatalf("%s: %v; want it refused", sql, err)
		}
	}
	tamper := func(sql string) {
		t.Helper()
		err := pgx.BeginFunc(ctx, b.cat.Pool(), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `ALTER TABLE catalog.events DISABLE TRIGGER USER; `+sql+`; ALTER TABLE catalog.events ENABLE TRIGGER USER`)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tamper(`UPDATE catalog.events SET operator = 'operator:mallory' WHERE seq = 3`)
	if v := verify(); v.OK || v.FirstBad != 3 || !strings.Contains(v.Reason, "changed") {
		t.Fatalf("verify after an altered event: %+v", v)
	}
	tamper(`UPDATE catalog.events SET operator = 'operator:alice' WHERE seq = 3`)
	if v := verify(); !v.OK {
		t.Fatalf("verify after undoing the change: %+v", v)
	}
	tamper(`DELETE FROM catalog.events WHERE seq = 5`)
	if v := verify(); v.OK || v.FirstBad != 5 {
		t.Fatalf("verify after removing the last event: %+v", v)
	}
	tamper(`DELETE FROM catalog.events WHERE seq = 2`)
	if v := verify(); v.OK || v.FirstBad != 3 || !strings.Contains(v.Reason, "missing") {
		t.Fatalf("verify after removing an event: %+v", v)
	}
}

// TestOperations: one open operation per tenant, steps recorded in order,
// and a finished operation cannot be finished or stepped again.
func TestOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	tn := b.createTenant(t, tenancy.ModelShared)
	start := func(kind catalog.OpKind) (*catalog.Operation, error) {
		op := &catalog.Operation{Kind: kind, TenantID: tn.ID, TenantSlug: tn.Slug}
		carol := tenancy.WithActor(ctx, tenancy.Actor{Kind: "operator", ID: "carol"})
		return op, b.cat.Tx(carol, func(tx pgx.Tx) error { return catalog.StartOperationTx(carol, tx, op) })
	}
	op, err := start(catalog.OpPurge)
	if err != nil || op.State != catalog.OpRunning || op.Operator != "operator:carol" {
		t.Fatalf("start: %+v, %v", op, err)
	}
	_, err = start(catalog.OpSuspend)
	tenanttest.WantCode(t, "a second open operation", err, tenancy.CodeConflict)
	for _, s := range []string{"one", "two"} {
		if err := b.cat.StartStep(ctx, op, s); err != nil {
			t.Fatal(err)
		}
		if err := b.cat.CompleteStep(ctx, op, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.cat.StartStep(ctx, op, "three"); err != nil {
		t.Fatal(err)
	}
	if err := b.cat.FailOperation(ctx, op, context.DeadlineExceeded); err != nil {
		t.Fatal(err)
	}
	cur, err := b.cat.OpenOperation(ctx, tn.ID)
	if err != nil || cur == nil || cur.State != catalog.OpFailed || strings.Join(cur.Steps, ",") != "one,two" ||
		cur.Step != "three" || !cur.Started("three") || cur.Completed("three") || cur.Error == "" {
		t.Fatalf("open operation: %+v, %v", cur, err)
	}
	// Continuing: the failed step starts again and completes.
	if err := b.cat.StartStep(ctx, cur, "three"); err != nil {
		t.Fatal(err)
	}
	if err := b.cat.Tx(ctx, func(tx pgx.Tx) error { return catalog.FinishOperationTx(ctx, tx, cur, catalog.OpDone) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cur.Steps, ",") != "one,two,three" || cur.FinishedAt == nil {
		t.Fatalf("finished: %+v", cur)
	}
	err = b.cat.Tx(ctx, func(tx pgx.Tx) error { return catalog.FinishOperationTx(ctx, tx, cur, catalog.OpRolledBack) })
	tenanttest.WantCode(t, "finishing twice", err, tenancy.CodeConflict)
	tenanttest.WantCode(t, "a step after the end", b.cat.StartStep(ctx, cur, "four"), tenancy.CodeConflict)
	if op, err := b.cat.OpenOperation(ctx, tn.ID); err != nil || op != nil {
		t.Fatalf("open operation after the end: %+v, %v", op, err)
	}
	if _, err := start(catalog.OpSuspend); err != nil {
		t.Fatalf("a new operation after the end: %v", err)
	}
	ops, err := b.cat.Operations(ctx, &catalog.OperationOpts{TenantID: tn.ID})
	if err != nil || len(ops) != 2 || ops[0].Kind != catalog.OpSuspend {
		t.Fatalf("operations: %+v, %v", ops, err)
	}

	// The lock: one holder at a time; released, it can be taken again.
	unlock, err := b.cat.LockTenant(ctx, tn.ID, tn.Slug)
	if err != nil {
		t.Fatal(err)
	}
	other := open(t, b.url)
	if unlockOther, err := other.LockTenant(ctx, tn.ID, tn.Slug); err == nil {
		unlockOther()
		unlock()
		t.Fatal("a second process took the tenant's lock")
	} else {
		tenanttest.WantCode(t, "a second lock holder", err, tenancy.CodeConflict)
	}
	unlock()
	unlock2, err := other.LockTenant(ctx, tn.ID, tn.Slug)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}
