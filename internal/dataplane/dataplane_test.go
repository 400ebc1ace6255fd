package dataplane_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestDropDatabaseEndsUnfinishedCreate: when a process dies in CREATE
// DATABASE, its backend goes on creating the database, which no other session
// sees until it commits. A DROP DATABASE IF EXISTS run meanwhile (a move
// rolled back by the next run) would find nothing, and the database would
// appear afterwards, claimed by nobody. DropDatabase ends that session first.
func TestDropDatabaseEndsUnfinishedCreate(t *testing.T) {
	ctx := context.Background()
	s := pgtest.DefaultServer(t)
	// A template large enough that copying it takes a while.
	tmpl := s.NewDatabase(t, "")
	fill, err := pgx.Connect(ctx, s.URL(tmpl))
	if err != nil {
		t.Fatal(err)
	}
	_, err = fill.Exec(ctx, `CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g`)
	fill.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	db := pgtest.UniqueName("orphan")
	t.Cleanup(func() { _ = dataplane.DropDatabase(context.Background(), admin, db) })

	// The creating session speaks the protocol by hand, so that nothing
	// cancels its statement when its connection goes (pgx would).
	pc, err := pgconn.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	creator, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	create := "CREATE DATABASE " + dataplane.Ident(db) + " TEMPLATE " + dataplane.Ident(tmpl)
	creator.Frontend.Send(&pgproto3.Query{String: create})
	if err := creator.Frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	running := func() bool {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'`, create).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	for deadline := time.Now().Add(10 * time.Second); !running(); {
		if time.Now().After(deadline) {
			t.Fatal("CREATE DATABASE not seen running")
		}
		time.Sleep(time.Millisecond)
	}
	// The process dies: its socket closes, its backend goes on.
	_ = creator.Conn.Close()
	if err := dataplane.DropDatabase(ctx, admin, db); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); running(); {
		if time.Now().After(deadline) {
			t.Fatal("the CREATE DATABASE of the dead session still runs after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s exists after DropDatabase: the dead session's CREATE DATABASE committed after the drop", db)
	}
}
