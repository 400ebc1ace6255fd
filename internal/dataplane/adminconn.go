package dataplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
)

// AdminConfig parses the administrative DSN of server name for a connection
// to database db (the DSN's own when empty). The connection asks PostgreSQL
// to check every second, while a statement runs, that its client is still
// there (client_connection_check_interval, PostgreSQL 14 and later): a
// process killed in the middle of a long statement — a purge deleting a
// large tenant's rows, a bulk copy — leaves a backend that would otherwise
// run the statement to its end, holding its locks, before it noticed; the
// run that takes over would wait for it, or for a chain of them.
func AdminConfig(server *tenancy.Server, db string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(server.DSN)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server.Name, err)
	}
	if db != "" {
		cfg.Database = db
	}
	cfg.AfterConnect = checkClient
	return cfg, nil
}

// checkClient sets client_connection_check_interval for the session, where
// the server knows it.
func checkClient(ctx context.Context, c *pgconn.PgConn) error {
	err := c.Exec(ctx, "SET client_connection_check_interval = '1s'").Close()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: before PostgreSQL 14
		return nil
	}
	return err
}
