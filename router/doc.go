// Package router runs a function in a transaction on the data of the tenant
// carried by the context, whatever the tenant's isolation model.
//
// Nothing is sent until the function's first statement. That statement goes to
// the server in one pipeline behind the prelude — BEGIN, RESET ALL and the
// transaction-local settings — so the prelude costs no round trip of its own,
// and if it fails the statement does not run:
//
//   - app.tenant_id and app.tenant_sig: the tenant and its signature with the
//     platform key. Every tenant table's Row-Level Security policy calls
//     tenancy.current_tenant_id(), which raises unless both are present and
//     match, so SQL that sets app.tenant_id itself cannot pick another tenant,
//     and SQL without a tenant fails loudly instead of matching nothing.
//   - search_path: the schema holding the tenant's tables, and nothing else.
//   - role (schema and database models): the tenant's NOLOGIN role, which can
//     reach only the tenant's schema, so even a schema-qualified query into
//     another tenant's schema is refused by PostgreSQL.
//   - app.actor, app.request_id, app.client_ip, app.user_agent: who acts and
//     from where, for the audit trail.
//
// The pgx.Tx given to the function supports statements, batches, COPY,
// savepoints and Conn; large objects are refused, because they live outside
// every tenant table.
//
// Every setting ends with the transaction, so nothing tenant-specific outlives
// it on a pooled connection (no DISCARD ALL, and pgx's statement cache stays).
//
// Connections are pooled per database under a per-server budget: idle
// connections of the least recently used databases are closed first, busy ones
// never, and callers over budget wait, bounded by their context.
//
// With Config.Limits, each tenant's plan applies (see limits.go): at most
// MaxConcurrentTx of its transactions run at once on this router, others wait
// in order of arrival, for at most Config.TxWait, then fail with
// CodeRateLimited; and its statement timeout is one more transaction-local
// setting of the prelude (a statement it cuts fails with CodeRateLimited too,
// wrapping PostgreSQL's error).
package router
