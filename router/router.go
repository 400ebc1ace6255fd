package router

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/connpool"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// Resolver returns the current catalog record of a tenant; the catalog's
// Cache implements it.
type Resolver interface {
	ResolveID(ctx context.Context, id uuid.UUID) (*tenancy.Tenant, error)
}

// Servers returns a server of the data plane by name; the catalog implements it.
type Servers interface {
	Server(ctx context.Context, name string) (*tenancy.Server, error)
}

// Config configures a Router.
type Config struct {
	// Resolver gives each tenant's current placement and status. Required.
	Resolver Resolver
	// Servers gives the connection settings of each server. Required.
	Servers Servers
	// Key is the platform key that signs tenant settings (catalog.TenantKey).
	// Required; at least 16 bytes.
	Key []byte
	// AppRole is the role the router connects as. It must not be a superuser,
	// own tenant tables or bypass Row-Level Security. Required.
	AppRole string
	// AppPassword is AppRole's password, used when a server has no AppDSN.
	AppPassword string
	// MaxConnsPerServer is the connection budget of each server, across all of
	// its databases. Default 50.
	MaxConnsPerServer int
	// MaxConnsPerDatabase caps one database's share of its server's budget.
	// Default: MaxConnsPerServer.
	MaxConnsPerDatabase int
	// IdleTimeout closes connections idle for longer. Default 5 minutes.
	IdleTimeout time.Duration
	// TracerProvider, when set, traces every tenant transaction (a span with
	// the tenant's slug, tier, model and server) and every statement (its
	// SQL text, not its arguments) in OpenTelemetry.
	TracerProvider trace.TracerProvider
	// ReuseWait is how long a transaction for a database that already has
	// connections in use waits for one of them, when the server's budget is
	// full, before it evicts another database's idle connection and dials
	// (connpool.Config.ReuseWait). Without it, many databases on one budget
	// evict each other's connections on almost every transaction. Default
	// 30ms; negative: no wait.
	ReuseWait time.Duration
	// Logger receives what the router does not return: admin transactions,
	// discarded connections. Nil: discard.
	Logger *slog.Logger

	// Limits gives each tenant's cap on concurrent transactions and its
	// statement timeout (the catalog's Cache; see limits.go). Nil: no
	// per-tenant limits.
	Limits LimitsSource
	// TxWait bounds how long a transaction waits for a slot when its tenant
	// is at its cap, before failing with CodeRateLimited. Default 1s.
	TxWait time.Duration
	// TxQueue bounds how many transactions of one tenant wait at once; more
	// fail at once with CodeRateLimited. Default 64.
	TxQueue int
}

// Router runs transactions on tenants' data. It is safe for concurrent use.
type Router struct {
	cfg    Config
	tracer trace.Tracer // nil: no tracing
	// txStats counts transactions by server and model, for metrics.
	txStats txStats

	mu      sync.Mutex
	servers map[string]*serverPool
	closed  bool

	conns sync.Map // *pgx.Conn → *connState, for every open connection

	slots  txSlots  // each tenant's concurrent transactions (limits.go)
	dbTime dbBudget // each tenant's database time (dbtime.go)
}

type serverPool struct {
	conns *connpool.Manager[*pgx.Conn]
}

// New returns a Router. It connects lazily, on the first transaction of each database.
func New(cfg Config) (*Router, error) {
	switch {
	case cfg.Resolver == nil:
		return nil, errors.New("router: Config.Resolver is required")
	case cfg.Servers == nil:
		return nil, errors.New("router: Config.Servers is required")
	case len(cfg.Key) < 16:
		return nil, errors.New("router: Config.Key must be at least 16 bytes")
	case cfg.AppRole == "":
		return nil, errors.New("router: Config.AppRole is required")
	}
	if cfg.MaxConnsPerServer <= 0 {
		cfg.MaxConnsPerServer = 50
	}
	if cfg.MaxConnsPerDatabase <= 0 || cfg.MaxConnsPerDatabase > cfg.MaxConnsPerServer {
		cfg.MaxConnsPerDatabase = cfg.MaxConnsPerServer
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	switch {
	case cfg.ReuseWait == 0:
		cfg.ReuseWait = 30 * time.Millisecond
	case cfg.ReuseWait < 0:
		cfg.ReuseWait = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, servers: map[string]*serverPool{}, dbTime: dbBudget{now: time.Now}}
	if cfg.TracerProvider != nil {
		r.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	return r, nil
}

// Close closes every connection. Transactions in flight finish first on their
// connection, which is then closed.
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, sp := range r.servers {
		sp.conns.Close()
	}
}

// TxOpts are the optional settings of a transaction. Nil means defaults: read
// write, the server's default isolation level.
type TxOpts struct {
	// ReadOnly starts a READ ONLY transaction.
	ReadOnly bool
	// IsoLevel is the isolation level; empty means the server's default.
	IsoLevel pgx.TxIsoLevel
	// IncludeDeleted shows soft-deleted rows too (to list or restore them:
	// UPDATE … SET deleted_at = NULL). Otherwise deleted rows are invisible.
	IncludeDeleted bool
}

// Tx runs fn in a transaction on the data of the tenant carried by ctx, and
// commits if fn returns nil, or rolls back otherwise (also when fn panics; the
// panic goes on). Without a tenant in ctx it returns an error with code
// CodeNoTenant before any SQL runs.
//
// fn may be called a second time, on a fresh transaction, if its first
// attempt failed only because a cached statement's result type changed under a
// different tenant schema (SQLSTATE 0A000 "cached plan must not change result
// type", seen while a fleet migration has reached some schemas but not others),
// or because the tenant moved (see the move package): a transaction that
// reached the tenant's old placement, or waited at a move's fence, is refused
// there and run again at the placement the catalog now gives. As with any
// retried transaction, fn must not have effects outside it.
func (r *Router) Tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return r.TxWith(ctx, nil, fn)
}

// TxWith is Tx with options.
func (r *Router) TxWith(ctx context.Context, opts *TxOpts, fn func(pgx.Tx) error) (err error) {
	id, ok := tenancy.TenantFromContext(ctx)
	if !ok {
		return tenancy.Errorf(tenancy.CodeNoTenant, "no tenant in context: refusing to run SQL without one (use tenancy.WithTenant, or the router's admin API for cross-tenant work)")
	}
	t, err := r.cfg.Resolver.ResolveID(ctx, id.ID)
	if err != nil {
		return err
	}
	if err := t.CheckServable(); err != nil {
		return err
	}
	start := time.Now()
	defer func() { r.txStats.observe(t, time.Since(start), err) }()
	if r.tracer != nil {
		var span trace.Span
		ctx, span = r.startTx(ctx, t)
		defer func() { endSpan(span, err) }()
	}
	begin, err := beginSQL(opts)
	if err != nil {
		return err
	}
	timeout, release, err := r.admit(ctx, t)
	if err != nil {
		return err
	}
	defer release()
	includeDeleted := opts != nil && opts.IncludeDeleted
	planRetried, moveRetried := false, false
	for {
		err := r.run(ctx, t, begin, includeDeleted, timeout, fn)
		if !planRetried && isCachedPlanChange(err) {
			planRetried = true
			continue
		}
		if isMovedAway(err) { // see fence.go
			if moveRetried {
				return movedAwayAgain(t, err)
			}
			moveRetried = true
			nt, err := r.resolveAfterMove(ctx, t)
			if err != nil {
				return err
			}
			t = nt
			continue
		}
		return txError(t, timeout, err)
	}
}

func (r *Router) run(ctx context.Context, t *tenancy.Tenant, begin string, includeDeleted bool, timeout time.Duration, fn func(pgx.Tx) error) (err error) {
	lease, err := r.acquire(ctx, t.Placement)
	if err != nil {
		return err
	}
	conn := lease.Conn()
	state := r.connState(conn)
	tx := newTx(conn, state, r.prelude(ctx, t, state, conn.PgConn().PID(), begin, includeDeleted, timeout))
	if r.tracer != nil {
		tx.span = trace.SpanFromContext(ctx) // the transaction's, from TxWith
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			lease.Destroy()
			panic(p)
		}
	}()
	if err = fn(tx); err != nil {
		if rbErr := tx.Rollback(context.WithoutCancel(ctx)); rbErr != nil || tx.beginErr != nil {
			lease.Destroy()
			return err
		}
		if isCachedPlanChange(err) {
			// Forget every prepared statement of this connection, so that the
			// retry prepares them again against the current schema.
			state.forget()
			if dErr := conn.DeallocateAll(ctx); dErr != nil {
				lease.Destroy()
				return err
			}
		}
		lease.Release()
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		if tx.beginErr != nil {
			lease.Destroy()
			return err
		}
		lease.Release() // Release closes the connection unless it is idle and healthy
		return fmt.Errorf("commit tenant transaction: %w", err)
	}
	lease.Release()
	return nil
}

// connState returns what the router knows of conn.
func (r *Router) connState(conn *pgx.Conn) *connState {
	if s, ok := r.conns.Load(conn); ok {
		return s.(*connState)
	}
	s := &connState{prepared: map[string]struct{}{}}
	r.conns.Store(conn, s)
	return s
}

func isCachedPlanChange(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "0A000" && strings.Contains(pgErr.Message, "cached plan must not change result type")
}

// beginSQL is the BEGIN statement for opts: the mode is always explicit, so
// that session characteristics left by earlier SQL on a pooled connection do
// not apply.
func beginSQL(opts *TxOpts) (string, error) {
	level := pgx.ReadCommitted
	if opts != nil && opts.IsoLevel != "" {
		level = opts.IsoLevel
	}
	switch level {
	case pgx.Serializable, pgx.RepeatableRead, pgx.ReadCommitted, pgx.ReadUncommitted:
	default:
		return "", tenancy.Errorf(tenancy.CodeInvalid, "unknown isolation level %q", string(level))
	}
	mode := " READ WRITE"
	if opts != nil && opts.ReadOnly {
		mode = " READ ONLY"
	}
	return "BEGIN ISOLATION LEVEL " + string(level) + mode, nil
}

// prelude is the start of a transaction for tenant t on the backend pid.
//
// The signature is bound to the backend (pid). The application role cannot
// read the settings of other sessions (provision sets track_activities off for
// it), and a signature seen anyway is worthless on another backend.
func (r *Router) prelude(ctx context.Context, t *tenancy.Tenant, state *connState, pid uint32, begin string, includeDeleted bool, timeout time.Duration) *prelude {
	role := "none"
	if t.Model != tenancy.ModelShared {
		role = t.Role()
	}
	a, _ := tenancy.ActorFromContext(ctx)
	c, _ := tenancy.ClientFromContext(ctx)
	deleted := ""
	if includeDeleted {
		deleted = "on"
	}
	sig, sign := "", func(pid uint32) string { return Sign(r.cfg.Key, t.ID, pid) }
	if !state.pooled {
		sig, sign = sign(pid), nil
	}
	return &prelude{sign: sign, begin: begin, args: [11]any{
		t.ID.String(),
		sig,
		// pg_temp last: otherwise PostgreSQL searches it first for relations,
		// and a temporary table left on the connection could shadow a tenant
		// table.
		dataplane.Ident(t.Placement.Schema) + ", pg_temp",
		role,
		clean(a.String()),
		clean(tenancy.RequestIDFromContext(ctx)),
		clean(c.IP),
		clean(c.UserAgent),
		deleted,
		t.Placement.Schema, // for the move fence
		timeoutSetting(timeout),
	}}
}

// clean makes an outside string safe to store in a setting: valid UTF-8, no
// NUL, at most 512 bytes.
func clean(s string) string {
	if len(s) > 512 {
		s = s[:512]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// Sign returns the signature of a tenant id on one backend (its pid) with the
// platform key: what tenancy.current_tenant_id() checks app.tenant_sig against.
func Sign(key []byte, id uuid.UUID, pid uint32) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id.String() + ":" + strconv.FormatUint(uint64(pid), 10)))
	return hex.EncodeToString(m.Sum(nil))
}

func (r *Router) acquire(ctx context.Context, p tenancy.Placement) (connpool.Lease[*pgx.Conn], error) {
	sp, err := r.server(ctx, p.Server)
	if err != nil {
		return connpool.Lease[*pgx.Conn]{}, err
	}
	lease, err := sp.conns.Acquire(ctx, p.Database)
	if errors.Is(err, connpool.ErrBudgetExhausted) {
		return lease, tenancy.Errorf(tenancy.CodeUnavailable, "server %q: %w", p.Server, err)
	}
	if err != nil {
		return lease, fmt.Errorf("connect to %s/%s: %w", p.Server, p.Database, err)
	}
	return lease, nil
}

func (r *Router) server(ctx context.Context, name string) (*serverPool, error) {
	r.mu.Lock()
	sp, ok := r.servers[name]
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, errors.New("router is closed")
	}
	if ok {
		return sp, nil
	}
	s, err := r.cfg.Servers.Server(ctx, name)
	if err != nil {
		return nil, err
	}
	base, err := r.appConnConfig(s)
	if err != nil {
		return nil, err
	}
	pooled := new(atomic.Bool)
	cfg := connpool.PgxConfig(r.cfg.MaxConnsPerServer, func(db string) (*pgx.ConnConfig, error) {
		c := base.Copy()
		c.Database = db
		if r.tracer != nil {
			c.Tracer = queryTracer{r.tracer}
		}
		if pooled.Load() {
			// Unnamed statements only: a named one would stay on the
			// backend it was prepared on.
			c.DefaultQueryExecMode = pgx.QueryExecModeExec
		}
		return c, nil
	})
	cfg.Dial = r.dialer(name, cfg.Dial, cfg.Close, pooled)
	closeConn := cfg.Close
	cfg.Close = func(c *pgx.Conn) {
		r.conns.Delete(c)
		closeConn(c)
	}
	cfg.MaxPerKey = r.cfg.MaxConnsPerDatabase
	cfg.IdleTimeout = r.cfg.IdleTimeout
	cfg.ReuseWait = r.cfg.ReuseWait
	m, err := connpool.New(cfg)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed { // closed meanwhile: Close would never see m
		m.Close()
		return nil, errors.New("router is closed")
	}
	if sp, ok := r.servers[name]; ok { // another caller won the race
		m.Close()
		return sp, nil
	}
	sp = &serverPool{conns: m}
	r.servers[name] = sp
	return sp, nil
}

// dialer wraps dial to find out whether the server's connections go through a
// transaction pooler such as PgBouncer: then the backend that runs a query is
// not the one the connection reported at login. From the first such
// connection on, the server's connections use unnamed statements (pooled is
// set, and a connection made before is replaced) and sign each transaction
// for the backend it lands on (tx.bindBackend). This costs one query per new
// connection.
func (r *Router) dialer(server string, dial func(context.Context, string) (*pgx.Conn, error), closeConn func(*pgx.Conn),
	pooled *atomic.Bool) func(context.Context, string) (*pgx.Conn, error) {
	return func(ctx context.Context, db string) (*pgx.Conn, error) {
		for attempt := 0; ; attempt++ {
			c, err := dial(ctx, db)
			if err != nil {
				return nil, err
			}
			var pid uint32
			if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`, pgx.QueryExecModeSimpleProtocol).Scan(&pid); err != nil {
				closeConn(c)
				return nil, fmt.Errorf("server %q: ask the backend pid: %w", server, err)
			}
			behindPooler := pid != c.PgConn().PID()
			if behindPooler && c.Config().DefaultQueryExecMode != pgx.QueryExecModeExec && attempt == 0 {
				if !pooled.Swap(true) {
					r.cfg.Logger.Info("tenancy: server connections go through a transaction pooler: unnamed statements, one more round trip per transaction",
						"server", server)
				}
				closeConn(c)
				continue
			}
			r.conns.Store(c, &connState{prepared: map[string]struct{}{}, pooled: behindPooler})
			return c, nil
		}
	}
}

// appConnConfig is the server's AppDSN, or its DSN with the application role's
// credentials.
func (r *Router) appConnConfig(s *tenancy.Server) (*pgx.ConnConfig, error) {
	dsn := s.AppDSN
	if dsn == "" {
		u, err := url.Parse(s.DSN)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("server %q: the DSN must be a postgres:// URL when no AppDSN is given", s.Name)
		}
		if r.cfg.AppPassword != "" {
			u.User = url.UserPassword(r.cfg.AppRole, r.cfg.AppPassword)
		} else {
			u.User = url.User(r.cfg.AppRole)
		}
		dsn = u.String()
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", s.Name, err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	return cfg, nil
}

// ForgetDatabase closes the pooled connections to one database (after it was
// dropped or its tenant moved away); busy ones close when released.
func (r *Router) ForgetDatabase(server, database string) {
	r.mu.Lock()
	sp, ok := r.servers[server]
	r.mu.Unlock()
	if ok {
		sp.conns.CloseKey(database)
	}
}

// Stats counts the router's connections to one server.
type Stats struct {
	Open      int   // connections open, at most MaxConnsPerServer
	InUse     int   // connections in a transaction (or being dialed)
	Idle      int   // connections waiting in the pool
	Waiting   int   // callers waiting for a connection
	Databases int   // databases with connections or waiters
	Dials     int64 // connections opened since the start
	Evictions int64 // idle connections closed to make room for another database
}

// Stats reports the connections of one server.
func (r *Router) Stats(server string) Stats {
	r.mu.Lock()
	sp, ok := r.servers[server]
	r.mu.Unlock()
	if !ok {
		return Stats{}
	}
	s := sp.conns.Stats()
	return Stats{Open: s.Open, InUse: s.InUse, Idle: s.Idle, Waiting: s.Waiting, Databases: s.Keys, Dials: s.Dials, Evictions: s.Evictions}
}
