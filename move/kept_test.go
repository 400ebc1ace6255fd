package move_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/move"
	"github.com/tenancyhq/tenancy/provision"
)

// sharedRows counts the tenant's contacts in the shared tables of server.
func sharedRows(t *testing.T, b *testBundle, tn *tenancy.Tenant, server string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), b.Server(server).URL(tn.Placement.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM shared.contacts WHERE tenant_id = $1`, tn.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDropKept: a copy kept by a move stays until DropKept removes it; a
// kept copy where the tenant lives again (a later move back) is its live data
// and stays; DropKept is idempotent.
func TestDropKept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 40)
	moveTo := func(model tenancy.Model, server string) {
		t.Helper()
		if _, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: model, Server: server, KeepSource: true}); err != nil {
			t.Fatalf("move to %s on %s: %v", model, server, err)
		}
	}
	kept := func() []move.Kept {
		t.Helper()
		k, err := b.mover.KeptSources(ctx, tn.Slug)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	moveTo(tenancy.ModelSchema, b.ServerNames[1])
	if k := kept(); len(k) != 1 || k[0].Model != tenancy.ModelShared || k[0].Placement != tn.Placement {
		t.Fatalf("kept after one move: %+v", k)
	}
	if n := sharedRows(t, b, tn, b.ServerNames[0]); n != 40 {
		t.Fatalf("the kept copy has %d contacts, want 40", n)
	}
	// Back to the shared tables it left: the first copy is live again.
	moveTo(tenancy.ModelShared, b.ServerNames[0])
	k := kept()
	if len(k) != 1 || k[0].Model != tenancy.ModelSchema || k[0].Placement.Server != b.ServerNames[1] {
		t.Fatalf("kept after moving back: %+v", k)
	}
	dropped, err := b.mover.DropKept(ctx, tn.Slug, 0)
	if err != nil || len(dropped) != 1 || dropped[0] != k[0] {
		t.Fatalf("drop kept: %+v %v", dropped, err)
	}
	if n := sharedRows(t, b, tn, b.ServerNames[0]); n != 40 {
		t.Errorf("the live copy has %d contacts after dropping the kept ones, want 40", n)
	}
	var exists bool
	conn := b.Server(b.ServerNames[1])
	c, err := pgx.Connect(ctx, conn.URL(k[0].Placement.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, k[0].Placement.Schema).Scan(&exists); err != nil || exists {
		t.Errorf("the kept schema %s is still there (%v)", k[0].Placement, err)
	}
	if k := kept(); len(k) != 0 {
		t.Errorf("kept after dropping: %+v", k)
	}
	if again, err := b.mover.DropKept(ctx, tn.Slug, 0); err != nil || len(again) != 0 {
		t.Errorf("drop kept again: %+v %v", again, err)
	}
	err = b.Platform.Router.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&n); err != nil {
			return err
		}
		if n != 39 { // seed2 is soft-deleted
			t.Errorf("the tenant sees %d contacts, want 39", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPurgeDropsKept: purging a tenant removes the copies its moves kept too,
// and a purge that is refused removes nothing.
func TestPurgeDropsKept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p := b.Platform
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 40)
	if _, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: tenancy.ModelDatabase, Server: b.ServerNames[1], KeepSource: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DeleteTenant(ctx, tn.Slug); err != nil {
		t.Fatal(err)
	}
	// Still retained: refused, and the kept copy stays.
	if _, err := p.PurgeTenant(ctx, tn.Slug, &provision.PurgeOpts{Confirm: tn.Slug}); tenancy.ErrorCode(err) != tenancy.CodeConflict {
		t.Fatalf("purge of a retained tenant: %v, want conflict", err)
	}
	if n := sharedRows(t, b, tn, b.ServerNames[0]); n != 40 {
		t.Fatalf("a refused purge left %d contacts in the kept copy, want 40", n)
	}
	if _, err := p.Catalog.Pool().Exec(ctx, `UPDATE catalog.tenants SET deleted_at = deleted_at - interval '31 days' WHERE id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}
	purged, err := p.PurgeTenant(ctx, tn.Slug, &provision.PurgeOpts{Confirm: tn.Slug})
	if err != nil || purged.Status != tenancy.StatusPurged {
		t.Fatalf("purge: %+v %v", purged, err)
	}
	if n := sharedRows(t, b, tn, b.ServerNames[0]); n != 0 {
		t.Errorf("the purged tenant's kept copy still has %d contacts", n)
	}
}

// TestDropKeptOlderThan: with an age, DropKept removes only the copies kept
// longer than that: a retention period for kept copies.
func TestDropKeptOlderThan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tn := b.create(t, tenancy.ModelShared, b.ServerNames[0], 10)
	if _, err := b.mover.Move(ctx, tn.Slug, &move.Opts{To: tenancy.ModelSchema, KeepSource: true}); err != nil {
		t.Fatal(err)
	}
	if slugs, err := b.mover.TenantsWithKept(ctx); err != nil || !slices.Contains(slugs, tn.Slug) {
		t.Fatalf("tenants with kept copies: %v %v", slugs, err)
	}
	if dropped, err := b.mover.DropKept(ctx, tn.Slug, time.Hour); err != nil || len(dropped) != 0 {
		t.Fatalf("a copy kept for less than an hour was dropped: %+v %v", dropped, err)
	}
	if n := sharedRows(t, b, tn, b.ServerNames[0]); n != 10 {
		t.Fatalf("the kept copy has %d contacts, want 10", n)
	}
	if _, err := b.mover.DropKept(ctx, tn.Slug, -time.Hour); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
		t.Errorf("a negative age: %v, want invalid", err)
	}
	if _, err := b.Platform.Catalog.Pool().Exec(ctx, `UPDATE catalog.moves SET updated_at = updated_at - interval '2 hours' WHERE tenant_id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}
	if dropped, err := b.mover.DropKept(ctx, tn.Slug, time.Hour); err != nil || len(dropped) != 1 {
		t.Fatalf("a copy kept for two hours: %+v %v", dropped, err)
	}
	if n := sharedRows(t, b, tn, b.ServerNames[0]); n != 0 {
		t.Errorf("the dropped copy still has %d contacts", n)
	}
	if slugs, err := b.mover.TenantsWithKept(ctx); err != nil || slices.Contains(slugs, tn.Slug) {
		t.Errorf("tenants with kept copies after the drop: %v %v", slugs, err)
	}
}
