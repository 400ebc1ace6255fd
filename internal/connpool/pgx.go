package connpool

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgxCloseTimeout bounds the goodbye to the server when a *pgx.Conn is
// closed; past it the socket is closed anyway.
const pgxCloseTimeout = 3 * time.Second

// pgxExitTimeout bounds the wait for the server to hang up after Terminate.
// A backend exits in a few milliseconds; a server that does not answer within
// this is unreachable, and its slot is given back regardless.
const pgxExitTimeout = 500 * time.Millisecond

// terminate is the protocol's Terminate message: 'X' and its length.
var terminate = []byte{'X', 0, 0, 0, 4}

// PgxConfig returns a Config for *pgx.Conn with the given budget. connConfig
// returns the connection settings for a key (typically the server and
// database of a placement); it is called on every dial and may return a
// cached config, since pgx copies it. A released connection is kept only if
// it is open, not busy, and not in a transaction. Set MaxPerKey and
// IdleTimeout on the result as needed.
func PgxConfig(budget int, connConfig func(key string) (*pgx.ConnConfig, error)) Config[*pgx.Conn] {
	return Config[*pgx.Conn]{
		Budget: budget,
		Dial: func(ctx context.Context, key string) (*pgx.Conn, error) {
			cc, err := connConfig(key)
			if err != nil {
				return nil, fmt.Errorf("connection config: %w", err)
			}
			return pgx.ConnectConfig(ctx, cc)
		},
		Close: closeAndAwaitExit,
		Reusable: func(c *pgx.Conn) bool {
			pc := c.PgConn()
			return !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'I'
		},
	}
}

// closeAndAwaitExit says goodbye to the server and waits, briefly, until the
// server hangs up. PostgreSQL closes a backend's socket only after the backend
// has left the process array (and pg_stat_activity), so once this returns the
// slot is free on the server too, and a connection dialed in its place does
// not find the server one over the budget. pgx's own Close does not wait: it
// sends Terminate and closes the socket at once, and the backend is still
// counted for a few milliseconds.
//
// A connection that cannot be taken over (busy, or already closed) is closed
// the ordinary way.
func closeAndAwaitExit(c *pgx.Conn) {
	hc, err := c.PgConn().Hijack()
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), pgxCloseTimeout)
		defer cancel()
		_ = c.Close(ctx) // the connection is gone either way
		return
	}
	nc := hc.Conn
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(pgxExitTimeout))
	if _, err := nc.Write(terminate); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, nc) // until the server hangs up, or the deadline
}
