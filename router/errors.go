package router

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgerr"
)

// unavailable gives a failure of the tenant's server — it restarted, is
// unreachable, or the tenant's database is gone — the code CodeUnavailable, so
// that callers answer 503 and may retry, instead of an internal error. Other
// errors (the function's own, SQL errors, the caller's cancelled context) are
// returned as they are.
//
// A transaction that could not even begin before the caller's deadline is
// unavailable too, as one that waited that long for a connection of the
// router's pool is. Behind a transaction pooler such as PgBouncer that is how
// a server outage often shows: PgBouncer holds the transaction in its queue
// while it cannot log in to the server (restarted, or the database dropped).
// So is a connection that could not be made before a deadline (the caller's,
// or the connect timeout): a server that hangs, or a network that drops its
// packets, shows that way.
func unavailable(t *tenancy.Tenant, err error) error {
	var be *beginError
	if errors.As(err, &be) && errors.Is(be.err, context.DeadlineExceeded) && tenancy.ErrorCode(err) == tenancy.CodeInternal {
		return tenancy.Errorf(tenancy.CodeUnavailable, "tenant %q: its database did not start the transaction before the deadline; retry later: %w", t.Slug, err)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && errors.Is(ce, context.DeadlineExceeded) && tenancy.ErrorCode(err) == tenancy.CodeInternal {
		return tenancy.Errorf(tenancy.CodeUnavailable, "tenant %q: its database did not answer before the deadline; retry later: %w", t.Slug, err)
	}
	if !pgerr.ServerFailure(err) {
		return err
	}
	return tenancy.Errorf(tenancy.CodeUnavailable, "tenant %q: its database is unavailable; retry later: %w", t.Slug, err)
}

// txError gives the error a tenant transaction ends with its code: a
// statement cut by the plan's statement timeout (timeout > 0) is over one of
// the plan's limits; a failure of the tenant's server is unavailable (see
// unavailable); anything else is returned as it is.
func txError(t *tenancy.Tenant, timeout time.Duration, err error) error {
	if timeout > 0 && isStatementTimeout(err) {
		return tenancy.Errorf(tenancy.CodeRateLimited, "tenant %q: a statement ran longer than the plan's statement timeout of %v: %w", t.Slug, timeout, err)
	}
	return unavailable(t, err)
}

// isStatementTimeout reports whether err is PostgreSQL cancelling a statement
// for statement_timeout (query_canceled, 57014, which a cancel request or the
// caller's context also gives, with another message).
func isStatementTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014" && strings.Contains(pgErr.Message, "statement timeout")
}
