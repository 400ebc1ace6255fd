package router

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// AdminOpts describe a cross-tenant administrative transaction.
type AdminOpts struct {
	// Server is the catalog name of the server. Required.
	Server string
	// Database is the database on it; empty means the server's shared database.
	Database string
	// Reason says why the work crosses tenants; it is logged with the actor. Required.
	Reason string
}

// AdminTx runs fn in a transaction as the server's administrator, outside any
// tenant: Row-Level Security does not apply. It is the one explicit door for
// cross-tenant work (support, reporting, repairs); leaving the tenant out of
// Tx never opens it. It requires an actor in ctx (tenancy.WithActor) and a
// reason, and logs both before any SQL runs.
func (r *Router) AdminTx(ctx context.Context, opts *AdminOpts, fn func(pgx.Tx) error) error {
	if opts == nil || opts.Server == "" || opts.Reason == "" {
		return tenancy.Errorf(tenancy.CodeInvalid, "admin transaction: a server and a reason are required")
	}
	actor, ok := tenancy.ActorFromContext(ctx)
	if !ok || actor.String() == "" {
		return tenancy.Errorf(tenancy.CodeInvalid, "admin transaction: an actor is required (tenancy.WithActor)")
	}
	s, err := r.cfg.Servers.Server(ctx, opts.Server)
	if err != nil {
		return err
	}
	cfg, err := dataplane.AdminConfig(s, opts.Database)
	if err != nil {
		return err
	}
	r.cfg.Logger.InfoContext(ctx, "admin transaction", "actor", actor.String(), "reason", opts.Reason,
		"server", s.Name, "database", cfg.Database, "request_id", tenancy.RequestIDFromContext(ctx))
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s/%s as administrator: %w", s.Name, cfg.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Changes made here reach tenants' audit logs under the actor's name.
		c, _ := tenancy.ClientFromContext(ctx)
		if _, err := tx.Exec(ctx, `SELECT set_config('app.actor', $1, true), set_config('app.request_id', $2, true),
			set_config('app.client_ip', $3, true), set_config('app.user_agent', $4, true)`,
			clean(actor.String()), clean(tenancy.RequestIDFromContext(ctx)), clean(c.IP), clean(c.UserAgent)); err != nil {
			return fmt.Errorf("admin transaction: %w", err)
		}
		return fn(tx)
	})
}
