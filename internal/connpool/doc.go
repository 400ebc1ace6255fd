// Package connpool keeps connections to many databases of one PostgreSQL
// server under a single connection budget.
//
// A connection is bound to one database, so a router that serves thousands of
// tenant databases needs a pool per database; but the server has a hard
// connection limit, and pools that each keep a few connections would exceed it
// long before the thousandth tenant. A Manager therefore budgets connections,
// not pools. Connections are keyed by a string (the placement: server and
// database), and the policy of Acquire is, in order:
//
//  1. reuse an idle connection of the same key (never dial when one exists);
//  2. if the key is below MaxPerKey and the budget has room, reserve a slot
//     and dial a new connection;
//  3. if the budget is full, close the least recently used idle connection of
//     another key and dial in its slot (busy connections are never evicted);
//     but if the key already has connections in use and Config.ReuseWait is
//     set, first wait up to ReuseWait for one of them to be released, so that
//     keys sharing a full budget do not evict each other's connections on
//     every Acquire;
//  4. otherwise wait, first come first served, until a connection is released
//     or closed, or until the caller's context ends. The error then wraps
//     ctx.Err() and matches ErrBudgetExhausted.
//
// Slots are reserved under the manager's mutex before dialing, and dials and
// closes run without it, so the budget holds during concurrent dials while a
// slow dial blocks nobody else. A slot is given back only after its connection
// has been closed, and an evicted connection is closed before its replacement
// is dialed, so the number of connections open on the server never exceeds
// Budget, even for a moment.
//
// The Manager is generic in the connection type so that its policy can be
// tested without a database; PgxConfig gives the configuration for *pgx.Conn.
package connpool
