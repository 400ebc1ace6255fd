package dataplane_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestAdminConfig: an administrative connection asks the server to check
// that its client is still there while a statement runs, and goes to the
// database asked for.
func TestAdminConfig(t *testing.T) {
	t.Parallel()
	s := pgtest.DefaultServer(t)
	db := s.NewDatabase(t, "")
	cfg, err := dataplane.AdminConfig(&tenancy.Server{Name: "pg1", DSN: s.URL("postgres")}, db)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var interval, current string
	if err := conn.QueryRow(ctx, `SELECT current_setting('client_connection_check_interval'), current_database()`).Scan(&interval, &current); err != nil {
		t.Fatal(err)
	}
	if interval != "1s" || current != db {
		t.Errorf("client_connection_check_interval %q in %q, want 1s in %q", interval, current, db)
	}
	if _, err := dataplane.AdminConfig(&tenancy.Server{Name: "pg1", DSN: "postgres://u@h:notaport/db"}, ""); err == nil {
		t.Error("a bad DSN parsed")
	}
}
