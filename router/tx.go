package router

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
)

// preludeSetSQL is the statement of the prelude that writes the transaction's
// settings. Its text never changes, so pgx prepares it once per connection and
// PostgreSQL plans it once; the values travel as parameters.
//
// It undoes whatever SQL of an earlier transaction left on the pooled
// connection at session level (with RESET ALL before it): session advisory
// locks are released, the role is always set (NONE for the shared model; RESET
// ALL does not touch it), and every app.* setting is written (” when absent).
// Before any setting it enters the tenant's move fence (see fence.go), with
// the tenant's schema ($10).
const preludeSetSQL = `SELECT pg_advisory_unlock_all(), tenancy.enter($1::text::uuid, $10),
 set_config('app.tenant_id', $1, true), set_config('app.tenant_sig', $2, true),
 set_config('search_path', $3, true), set_config('role', $4, true),
 set_config('app.actor', $5, true), set_config('app.request_id', $6, true),
 set_config('app.client_ip', $7, true), set_config('app.user_agent', $8, true),
 set_config('app.include_deleted', $9, true)`

// preludeSetTimeoutSQL is preludeSetSQL that also sets the tenant's statement
// timeout ($11), for tenants whose plan has one (see limits.go). Others keep
// the server's default, which RESET ALL has just restored, and pay nothing.
const preludeSetTimeoutSQL = preludeSetSQL + `,
 set_config('statement_timeout', $11, true)`

// prelude is what starts a tenant transaction: BEGIN with an explicit mode (not
// the session's characteristics, which earlier SQL may have changed), RESET
// ALL, and the settings. It is sent in one pipeline with the transaction's
// first statement, so a transaction of one statement costs the same round trips
// as that statement alone plus COMMIT.
type prelude struct {
	begin string  // BEGIN ISOLATION LEVEL … READ WRITE|READ ONLY, from a fixed set
	args  [11]any // the parameters of preludeSetTimeoutSQL; of preludeSetSQL without the last
	// sign, when set, signs the tenant for a backend that is not yet known:
	// behind a transaction pooler (see tx.bindBackend). args[1] is then
	// empty until the transaction is open.
	sign func(pid uint32) string
	// opened: BEGIN and RESET ALL were sent (by bindBackend).
	opened bool
}

// queue adds the prelude to b.
func (p *prelude) queue(b *pgx.Batch) {
	if !p.opened {
		b.Queue(p.begin)
		b.Queue("RESET ALL")
	}
	if p.args[10] == "" { // no statement timeout
		b.Queue(preludeSetSQL, p.args[:10]...)
		return
	}
	b.Queue(preludeSetTimeoutSQL, p.args[:]...)
}

// len is the number of statements queue adds.
func (p *prelude) len() int {
	if p.opened {
		return 1
	}
	return 3
}

// tx is the pgx.Tx that Router.Tx gives its function. Until the first
// statement nothing is sent; the first statement goes in one pipeline after the
// prelude, and every statement that cannot (a batch, COPY, Prepare, a
// savepoint, or direct use of the connection) has the prelude sent on its own
// first. Nothing the function runs can reach the server before the prelude: a
// failed prelude aborts the pipeline, and the statement after it is not run.
type tx struct {
	conn    *pgx.Conn
	state   *connState
	pending *prelude // not yet sent; nil once sent
	// beginErr is set when sending the prelude failed: the connection's state
	// is unknown and the router discards it.
	beginErr error
	closed   bool
	nested   int64 // savepoints taken, to name the next
	// span is the transaction's span when the router traces (see
	// Config.TracerProvider), else nil.
	span trace.Span
}

var _ pgx.Tx = (*tx)(nil)

func newTx(conn *pgx.Conn, state *connState, p *prelude) *tx {
	return &tx{conn: conn, state: state, pending: p}
}

// traced returns ctx with the transaction's span, when the router traces, so
// that its statements' spans are the transaction's children whatever context
// the function passes them.
func (t *tx) traced(ctx context.Context) context.Context {
	if t.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, t.span)
}

// maxPipelined bounds the statements a connection keeps prepared for being
// sent right after the prelude.
const maxPipelined = 256

// connState is what the router knows of one pooled connection: the statements
// it has prepared there under their own text, inside a tenant transaction.
//
// A statement can follow the prelude in one pipeline only if the connection
// need not prepare it first: pgx prepares unknown statements of a batch in a
// round trip before the batch, which would run before the prelude, without the
// tenant's search_path and role, and fail (or, worse, resolve names in the
// wrong schema). So the first time a statement opens a transaction on a
// connection, the prelude goes alone, the statement is prepared by name inside
// the transaction, and from then on it is pipelined.
type connState struct {
	prepared map[string]struct{}
	// pooled: the connection goes through a transaction pooler (see
	// Router.dial).
	pooled bool
}

// forget drops what the connection had prepared (after DeallocateAll).
func (s *connState) forget() { clear(s.prepared) }

// ready prepares for the transaction's first statement, sql. It reports true
// when sql can follow the prelude in one pipeline: the connection has it
// prepared, or its exec mode prepares nothing before a batch. Otherwise it has
// sent the prelude alone and prepared sql inside the transaction, for next
// time.
func (t *tx) ready(ctx context.Context, sql string) (pipeline bool, err error) {
	switch t.conn.Config().DefaultQueryExecMode {
	case pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec:
		return true, nil // nothing is described or prepared before a batch
	}
	if _, ok := t.state.prepared[sql]; ok {
		return true, nil
	}
	if err := t.begin(ctx); err != nil {
		return false, err
	}
	if len(t.state.prepared) < maxPipelined {
		if _, err := t.conn.Prepare(ctx, sql, sql); err != nil {
			return false, err
		}
		t.state.prepared[sql] = struct{}{}
	}
	return false, nil
}

// errTxClosed is pgx.ErrTxClosed, so callers can test for it as with pgx.
var errTxClosed = pgx.ErrTxClosed

// bindBackend opens the transaction and asks which backend it runs on, when
// the connection goes through a transaction pooler: the pid the connection
// reported at login is the pooler's, and the signature must name the backend
// that checks it. It costs a round trip; the pooler keeps the backend for the
// transaction from then on.
func (t *tx) bindBackend(ctx context.Context) error {
	p := t.pending
	if p == nil || p.sign == nil {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(p.begin)
	b.Queue("RESET ALL")
	b.Queue("SELECT pg_backend_pid()")
	br := t.conn.SendBatch(ctx, b)
	var pid uint32
	_, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		err = br.QueryRow().Scan(&pid)
	}
	if cErr := br.Close(); err == nil {
		err = cErr
	}
	if err != nil {
		return t.failBegin(err)
	}
	p.args[1], p.sign, p.opened = p.sign(pid), nil, true
	return nil
}

// begin sends the prelude alone, if it has not been sent.
func (t *tx) begin(ctx context.Context) error {
	if err := t.usable(); err != nil || t.pending == nil {
		return err
	}
	if err := t.bindBackend(ctx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	t.pending.queue(b)
	br := t.conn.SendBatch(ctx, b)
	err := t.consumePrelude(br)
	if cErr := br.Close(); err == nil && cErr != nil {
		err = t.failBegin(cErr)
	}
	return err
}

// batch sends the prelude, if pending, and then the statement in one pipeline.
// The results are positioned at the statement's. done must be called once the
// statement's results have been read.
func (t *tx) batch(ctx context.Context, sql string, args []any) (br pgx.BatchResults, err error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := t.bindBackend(ctx); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	p := t.pending
	if p != nil {
		p.queue(b)
	}
	b.Queue(sql, args...)
	br = t.conn.SendBatch(ctx, b)
	if p != nil {
		if err := t.consumePrelude(br); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

// usable returns why no statement can run, if so.
func (t *tx) usable() error {
	if t.closed {
		return errTxClosed
	}
	return t.beginErr
}

// consumePrelude reads the prelude's results from br.
func (t *tx) consumePrelude(br pgx.BatchResults) error {
	n := t.pending.len()
	t.pending = nil
	for range n {
		if _, err := br.Exec(); err != nil {
			return t.failBegin(err)
		}
	}
	return nil
}

func (t *tx) failBegin(err error) error {
	t.pending = nil
	t.beginErr = &beginError{err: err}
	return t.beginErr
}

// beginError is a failure to start the transaction on its connection: none
// of the function's statements ran.
type beginError struct{ err error }

func (e *beginError) Error() string { return "begin tenant transaction: " + e.err.Error() }
func (e *beginError) Unwrap() error { return e.err }

// pipelinable reports whether a statement can follow the prelude in one
// pipeline: not when args start with one of pgx's per-query options, which only
// the connection's own Query and Exec understand.
func pipelinable(args []any) bool {
	if len(args) == 0 {
		return true
	}
	switch args[0].(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
		return false
	}
	return true
}

// Exec runs sql; with the prelude in the same round trip when it is the first
// and has arguments. Without arguments pgx uses the simple protocol, which
// allows several statements in sql, so the prelude goes first on its own.
func (t *tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	ctx = t.traced(ctx)
	if t.pending == nil || len(args) == 0 || !pipelinable(args) {
		if err := t.begin(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return t.conn.Exec(ctx, sql, args...)
	}
	if pipeline, err := t.ready(ctx, sql); err != nil || !pipeline {
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		return t.conn.Exec(ctx, sql, args...)
	}
	br, err := t.batch(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cErr := closeBatch(br); err == nil {
		err = cErr
	}
	return tag, err
}

// closeBatch closes br. pgx 5.7.2 returns from the first Close of a pipeline
// whose last statement failed without reading the pipeline to its end, which
// leaves the connection busy (and the router would discard it); a second
// Close reads it.
func closeBatch(br pgx.BatchResults) error {
	err := br.Close()
	if err != nil {
		_ = br.Close()
	}
	return err
}

// Query runs sql; with the prelude in the same round trip when it is the first.
func (t *tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	ctx = t.traced(ctx)
	if t.pending == nil || !pipelinable(args) {
		if err := t.begin(ctx); err != nil {
			return nil, err
		}
		return t.conn.Query(ctx, sql, args...)
	}
	if pipeline, err := t.ready(ctx, sql); err != nil || !pipeline {
		if err != nil {
			return nil, err
		}
		return t.conn.Query(ctx, sql, args...)
	}
	br, err := t.batch(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs sql; with the prelude in the same round trip when it is the
// first.
func (t *tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := t.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// SendBatch sends the prelude first, if pending, then b.
func (t *tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	ctx = t.traced(ctx)
	if err := t.begin(ctx); err != nil {
		return errBatchResults{err}
	}
	return t.conn.SendBatch(ctx, b)
}

// CopyFrom sends the prelude first, if pending, then the COPY.
func (t *tx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	ctx = t.traced(ctx)
	if err := t.begin(ctx); err != nil {
		return 0, err
	}
	return t.conn.CopyFrom(ctx, table, columns, src)
}

// Prepare sends the prelude first, if pending, then prepares sql.
func (t *tx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if t.state.pooled {
		// The pooler may run the next transaction on another backend, where
		// the statement does not exist.
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "prepared statements are not available behind a transaction pooler; run the statement directly")
	}
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	return t.conn.Prepare(ctx, name, sql)
}

// LargeObjects panics: large objects live outside every tenant table, in one
// store per database that Row-Level Security does not cover, so the router
// does not offer them. Keep bytes in a bytea column of a tenant table.
func (t *tx) LargeObjects() pgx.LargeObjects {
	panic("tenancy: large objects are not isolated by tenant; keep bytes in a bytea column of a tenant table")
}

// Conn sends the prelude, if pending, and returns the connection, so that
// whatever runs on it runs inside the tenant transaction. If the prelude cannot
// be sent, the next statement on the connection fails (the transaction is
// aborted) or runs outside any tenant, where every tenant table refuses it.
func (t *tx) Conn() *pgx.Conn {
	_ = t.begin(context.Background())
	return t.conn
}

// Begin starts a savepoint, a pseudo nested transaction, as pgx does.
func (t *tx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	t.nested++
	sp := &savepoint{tx: t, name: "sp_" + strconv.FormatInt(t.nested, 10)}
	if _, err := t.conn.Exec(ctx, "SAVEPOINT "+sp.name); err != nil {
		return nil, err
	}
	return sp, nil
}

// Commit commits. If no statement was sent, there is nothing to commit and no
// round trip is made. As with pgx, a commit of a failed transaction returns
// pgx.ErrTxCommitRollback.
func (t *tx) Commit(ctx context.Context) error {
	if t.closed {
		return errTxClosed
	}
	t.closed = true
	if t.pending != nil {
		t.pending = nil
		return nil
	}
	if t.beginErr != nil {
		return t.beginErr
	}
	tag, err := t.conn.Exec(ctx, "COMMIT")
	if err != nil {
		if t.conn.PgConn().TxStatus() != 'I' {
			_ = t.conn.Close(ctx) // the transaction's state is unknown
		}
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback rolls back; a no-op if no statement was sent.
func (t *tx) Rollback(ctx context.Context) error {
	if t.closed {
		return errTxClosed
	}
	t.closed = true
	if t.pending != nil {
		t.pending = nil
		return nil
	}
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = t.conn.Close(ctx)
		return err
	}
	return nil
}

// savepoint is a pseudo nested transaction inside a tx.
type savepoint struct {
	*tx
	name   string
	closed bool
}

// Commit releases the savepoint.
func (s *savepoint) Commit(ctx context.Context) error { return s.end(ctx, "RELEASE SAVEPOINT ") }

// Rollback rolls back to the savepoint.
func (s *savepoint) Rollback(ctx context.Context) error { return s.end(ctx, "ROLLBACK TO SAVEPOINT ") }

func (s *savepoint) end(ctx context.Context, verb string) error {
	if s.closed || s.tx.closed {
		return errTxClosed
	}
	s.closed = true
	_, err := s.conn.Exec(ctx, verb+s.name)
	return err
}

// batchRows are the rows of a statement sent in a pipeline after the prelude:
// when they are done, the pipeline's remaining results are read.
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error // from closing br
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	if r.br == nil {
		return
	}
	r.Rows.Close()
	r.err = closeBatch(r.br)
	r.br = nil
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// row is pgx.Row over rows: the first row, or pgx.ErrNoRows.
type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errBatchResults answers every call with one error.
type errBatchResults struct{ err error }

func (e errBatchResults) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, e.err }
func (e errBatchResults) Query() (pgx.Rows, error)         { return nil, e.err }
func (e errBatchResults) QueryRow() pgx.Row                { return &row{err: e.err} }
func (e errBatchResults) Close() error                     { return e.err }
