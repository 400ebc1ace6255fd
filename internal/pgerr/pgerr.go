// Package pgerr classifies PostgreSQL errors.
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
)

// ServerFailure reports whether err says that the server, not the statement,
// failed: it restarted, is unreachable, or the database is gone. Errors that
// already carry a tenancy code, and the caller's own cancelled or expired
// context, are not.
func ServerFailure(err error) bool {
	var te *tenancy.Error
	if err == nil || errors.As(err, &te) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08: connection exception; 57P01-57P03: the server is shutting down,
		// crashed or not yet accepting; 3D000: the database does not exist.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || pgErr.Code == "3D000"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "conn closed")
}
