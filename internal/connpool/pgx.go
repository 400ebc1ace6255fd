package connpool

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgxCloseTimeout bounds the goodbye to the server when a *pgx.Conn is
// closed; past it the socket is closed anyway.
const pgxCloseTimeout = 3 * time.Second

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
		Close: func(c *pgx.Conn) {
			ctx, cancel := context.WithTimeout(context.Background(), pgxCloseTimeout)
			defer cancel()
			_ = c.Close(ctx) // the connection is gone either way
		},
		Reusable: func(c *pgx.Conn) bool {
			pc := c.PgConn()
			return !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() == 'I'
		},
	}
}
