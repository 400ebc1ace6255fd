package move

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// maxCatchUpRounds bounds the rounds of copying changes before the fence.
const maxCatchUpRounds = 5

// copied is what the copy before the fence did.
type copied struct {
	tables  []*table
	bulkSeq int64 // the tenant's last audit entry that the bulk copy saw
	lastSeq int64 // … and that the last catch-up round saw
	rows    int64
	elapsed time.Duration // the bulk copy
}

// copyAll copies the tenant's rows from a snapshot of the source (the bulk
// copy), verifies the destination against that snapshot, then copies the
// rows changed meanwhile in catch-up rounds. The tenant works all along.
func (m *Mover) copyAll(ctx context.Context, r *record, slug string, progress func(Progress), bytes *atomic.Int64) (*copied, error) {
	srcConn, dstConn, closeConns, err := m.connectBoth(ctx, r)
	if err != nil {
		return nil, err
	}
	defer closeConns()

	start := time.Now()
	srcTx, err := srcConn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin the source's snapshot: %w", err)
	}
	defer srcTx.Rollback(context.WithoutCancel(ctx))
	dstTx, err := dstConn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer dstTx.Rollback(context.WithoutCancel(ctx))
	if err := replica(ctx, dstTx); err != nil {
		return nil, err
	}
	src, dst := side{srcTx, r.From.Schema}, side{dstTx, r.To.Schema}
	c := &copied{}
	if c.tables, err = tenantTables(ctx, srcTx, src.schema); err != nil {
		return nil, err
	}
	dstTables, err := tenantTables(ctx, dstTx, dst.schema)
	if err != nil {
		return nil, err
	}
	if err := sameTables(c.tables, dstTables); err != nil {
		return nil, err
	}
	if c.bulkSeq, err = lastSeq(ctx, src, r.Tenant); err != nil {
		return nil, err
	}
	var rebuild []string
	if r.ToModel != tenancy.ModelShared {
		// A new schema or database, served by nobody yet: its secondary
		// indexes are built once after the copy rather than row by row.
		if rebuild, err = dropSecondaryIndexes(ctx, dstTx, dst.schema); err != nil {
			return nil, err
		}
	}
	for _, t := range c.tables {
		n, err := copyRows(ctx, src, dst, t, r.Tenant, "", bytes)
		if err != nil {
			return nil, err
		}
		c.rows += n
		if progress != nil {
			progress(Progress{Slug: slug, Step: "copy", Table: t.name, Rows: c.rows})
		}
	}
	for _, def := range rebuild {
		if _, err := dstTx.Exec(ctx, def); err != nil {
			return nil, fmt.Errorf("rebuild an index: %w", err)
		}
	}
	if err := dstTx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit the bulk copy: %w", err)
	}
	c.elapsed = time.Since(start)
	// Statistics for the planner, before the fence's queries by key and the
	// tenant's first queries at the destination: autovacuum may be minutes
	// away.
	for _, t := range c.tables {
		if _, err := dstConn.Exec(ctx, "ANALYZE "+dataplane.Ident(dst.schema, t.name)); err != nil {
			return nil, fmt.Errorf("analyze %s: %w", t.name, err)
		}
	}
	if m.hook != nil {
		if err := m.hook("bulk"); err != nil {
			return nil, fmt.Errorf("%w: %w", errStop, err)
		}
	}

	// Verified against the snapshot it was copied from: every row, by count
	// and content.
	checkTx, err := dstConn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer checkTx.Rollback(context.WithoutCancel(ctx))
	if err := verify(ctx, src, side{checkTx, r.To.Schema}, c.tables, r.Tenant, true, nil); err != nil {
		return nil, fmt.Errorf("after the bulk copy: %w", err)
	}
	if err := checkTx.Commit(ctx); err != nil {
		return nil, err
	}
	if err := srcTx.Commit(ctx); err != nil {
		return nil, err
	}

	c.lastSeq = c.bulkSeq
	for range maxCatchUpRounds {
		n, seq, err := catchUp(ctx, srcConn, dstConn, r, c, bytes)
		if err != nil {
			return nil, err
		}
		c.rows += n
		c.lastSeq = seq
		if n < m.cfg.CatchUpRows {
			break
		}
	}
	return c, nil
}

// connectBoth connects to the source and destination databases of r.
func (m *Mover) connectBoth(ctx context.Context, r *record) (src, dst *pgx.Conn, closeBoth func(), err error) {
	if src, err = m.connect(ctx, r.From.Server, r.From.Database); err != nil {
		return nil, nil, nil, err
	}
	if dst, err = m.connect(ctx, r.To.Server, r.To.Database); err != nil {
		src.Close(context.WithoutCancel(ctx))
		return nil, nil, nil, err
	}
	return src, dst, func() {
		src.Close(context.WithoutCancel(ctx))
		dst.Close(context.WithoutCancel(ctx))
	}, nil
}

// catchUp copies, without a fence, the rows changed since the last round
// (c.lastSeq), from a new snapshot of the source, and returns how many and
// the last audit entry that snapshot saw.
func catchUp(ctx context.Context, srcConn, dstConn *pgx.Conn, r *record, c *copied, bytes *atomic.Int64) (int64, int64, error) {
	srcTx, err := srcConn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, 0, err
	}
	defer srcTx.Rollback(context.WithoutCancel(ctx))
	src := side{srcTx, r.From.Schema}
	seq, err := lastSeq(ctx, src, r.Tenant)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	if seq != c.lastSeq {
		dstTx, err := dstConn.Begin(ctx)
		if err != nil {
			return 0, 0, err
		}
		defer dstTx.Rollback(context.WithoutCancel(ctx))
		if err := replica(ctx, dstTx); err != nil {
			return 0, 0, err
		}
		if n, err = copyDelta(ctx, src, side{dstTx, r.To.Schema}, c.tables, r.Tenant, c.lastSeq, bytes); err != nil {
			return 0, 0, err
		}
		if err := dstTx.Commit(ctx); err != nil {
			return 0, 0, fmt.Errorf("commit a catch-up round: %w", err)
		}
	}
	// Every table's row count, at this snapshot: here rather than under
	// the fence, where counting every row would make the pause grow with
	// the tenant's size.
	checkTx, err := dstConn.Begin(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer checkTx.Rollback(context.WithoutCancel(ctx))
	if err := verify(ctx, src, side{checkTx, r.To.Schema}, c.tables, r.Tenant, false, nil); err != nil {
		return 0, 0, fmt.Errorf("after catching up: %w", err)
	}
	if err := checkTx.Commit(ctx); err != nil {
		return 0, 0, err
	}
	return n, seq, srcTx.Commit(ctx)
}

// verify compares the tenant's rows at src and dst, table by table: the
// rows where selects (nil: every row; a table for which it reports false is
// skipped), by count and, with hash, by content. It fails with an error
// wrapping ErrMismatch that names the first table that differs.
func verify(ctx context.Context, src, dst side, tables []*table, tenant uuid.UUID, hash bool, where func(t *table, alias, schema string) (string, bool)) error {
	if err := stable(ctx, src.tx); err != nil {
		return err
	}
	if err := stable(ctx, dst.tx); err != nil {
		return err
	}
	compare := func(t *table, sw, dw string, hash bool) error {
		// Both sides at once, on their own connections: the fence waits
		// for the slower, not for both.
		var b sum
		var bErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			b, bErr = tableSum(ctx, dst, t, tenant, dw, hash)
		}()
		a, err := tableSum(ctx, src, t, tenant, sw, hash)
		<-done
		if err != nil {
			return err
		}
		if bErr != nil {
			return bErr
		}
		if a != b {
			return fmt.Errorf("%w: table %s has %d rows (checksum %s) at the source and %d (checksum %s) at the destination",
				ErrMismatch, t.name, a.Rows, a.Hash, b.Rows, b.Hash)
		}
		return nil
	}
	for _, t := range tables {
		sw, dw := "", ""
		if where != nil {
			var ok bool
			if sw, ok = where(t, "s", src.schema); !ok {
				continue
			}
			dw, _ = where(t, "s", dst.schema)
		}
		if err := compare(t, sw, dw, hash); err != nil {
			return err
		}
	}
	return nil
}

// fenced is what the fence did.
type fenced struct {
	start time.Time
	pause time.Duration
	rows  int64
}

// fence holds the tenant's writers at the source while it copies the last
// changes and the sequences, verifies, marks the source moved away and
// switches the catalog; then it lets the writers go, to the new placement.
func (m *Mover) fence(ctx context.Context, r *record, slug string, c *copied, bytes *atomic.Int64, progress func(Progress)) (*fenced, error) {
	// Connected before the fence: no connection is made while writers wait.
	lock, err := m.connect(ctx, r.From.Server, r.From.Database)
	if err != nil {
		return nil, err
	}
	defer lock.Close(context.WithoutCancel(ctx)) // releases the fence if still held
	srcConn, dstConn, closeConns, err := m.connectBoth(ctx, r)
	if err != nil {
		return nil, err
	}
	defer closeConns()
	if _, err := lock.Exec(ctx, fmt.Sprintf("SET lock_timeout = %d", m.cfg.FenceTimeout.Milliseconds())); err != nil {
		return nil, err
	}

	start := time.Now() // writers arriving from now on wait
	f := &fenced{start: start}
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_lock(tenancy.fence_key($1))`, r.Tenant); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return nil, tenancy.Errorf(tenancy.CodeUnavailable, "the tenant's transactions did not end within the fence timeout (%s): %w", m.cfg.FenceTimeout, err)
		}
		return nil, fmt.Errorf("take the fence: %w", err)
	}
	locked := time.Now()
	if err := m.step(ctx, r, slug, "fenced", c.rows, progress); err != nil {
		return f, err
	}
	var err2 error
	if f.rows, err2 = m.lastDelta(ctx, srcConn, dstConn, r, c, bytes); err2 != nil {
		return f, err2
	}

	// The source refuses the tenant from now on: transactions waiting at the
	// fence will find the mark, and go to the catalog.
	var xid string
	if err := pgx.BeginFunc(ctx, lock, func(tx pgx.Tx) error {
		if err := mark(ctx, tx, r.Tenant, r.From.Schema, r.To.String(), r.ID); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT txid_current()::text`).Scan(&xid)
	}); err != nil {
		return f, fmt.Errorf("mark the source: %w", err)
	}
	marked := time.Now()
	if err := m.step(ctx, r, slug, "marked", c.rows+f.rows, progress); err != nil {
		return f, err
	}
	if err := pgx.BeginFunc(ctx, dstConn, func(tx pgx.Tx) error { return unmark(ctx, tx, r.Tenant, r.To.Schema, r.ID) }); err != nil {
		return f, fmt.Errorf("unmark the destination: %w", err)
	}
	err = m.switchPlacement(ctx, r, slug, time.Since(start))
	if err == nil && m.hook != nil {
		err = m.hook("switch-answer") // tests: the switch committed, its answer lost
	}
	if err != nil {
		switch m.switchOutcome(ctx, r) {
		case Switched: // committed, though its answer was lost: go on
		case Copied:
			// Not switched: the destination must not serve the tenant.
			_ = pgx.BeginFunc(context.WithoutCancel(ctx), dstConn, func(tx pgx.Tx) error {
				return mark(ctx, tx, r.Tenant, r.To.Schema, "arriving", r.ID)
			})
			return f, err
		default:
			// Unknown: rolling back could drop the copy the catalog now
			// names. The source stays marked, refusing the tenant, and a
			// run of the move reads the outcome and finishes or rolls back.
			return f, fmt.Errorf("%w: the switch of the placement failed and its outcome is unknown (%w); run the move again to finish or roll it back", errUndecided, err)
		}
	}
	r.State = Switched
	switched := time.Now()
	if err := m.step(ctx, r, slug, string(Switched), c.rows+f.rows, progress); err != nil {
		return f, err
	}
	drain(ctx, lock, xid, m.cfg.DrainTimeout)
	drained := time.Now()
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_unlock(tenancy.fence_key($1))`, r.Tenant); err != nil {
		m.cfg.Logger.WarnContext(ctx, "release the fence", "move", r.ID, "err", err) // closing the connection releases it
	}
	f.pause = time.Since(start)
	m.cfg.Logger.InfoContext(ctx, "move fence released", "tenant", slug, "move", r.ID, "pause", f.pause,
		"lock", locked.Sub(start), "delta_and_verify", marked.Sub(locked), "switch", switched.Sub(marked),
		"drain", drained.Sub(switched), "rows", f.rows)
	return f, nil
}

// lastDelta copies, under the fence, the rows changed since the last
// catch-up round and the sequences, then verifies the count and content of
// every row changed since the bulk copy (which was verified in full, and
// every table's count again at the last catch-up round). Both sides commit
// only if they match.
func (m *Mover) lastDelta(ctx context.Context, srcConn, dstConn *pgx.Conn, r *record, c *copied, bytes *atomic.Int64) (int64, error) {
	srcTx, err := srcConn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, err
	}
	defer srcTx.Rollback(context.WithoutCancel(ctx))
	dstTx, err := dstConn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer dstTx.Rollback(context.WithoutCancel(ctx))
	if err := replica(ctx, dstTx); err != nil {
		return 0, err
	}
	src, dst := side{srcTx, r.From.Schema}, side{dstTx, r.To.Schema}
	// A fleet migration of the shared tables does not skip a moving tenant:
	// the tables copied must still be the model's latest on both sides. (A
	// migration arriving now waits for this transaction's locks.)
	for _, s := range []side{src, dst} {
		st, err := m.cfg.Model.StateTx(ctx, s.tx, s.schema)
		if err != nil {
			return 0, err
		}
		if !st.Current() {
			return 0, tenancy.Errorf(tenancy.CodeConflict, "the data model of %s changed during the move (it %s): run the move again", s.schema, st.Describe(m.cfg.Model.Latest()))
		}
	}
	n, err := copyDelta(ctx, src, dst, c.tables, r.Tenant, c.lastSeq, bytes)
	if err != nil {
		return 0, err
	}
	if err := copySequences(ctx, src, dst, c.tables); err != nil {
		return 0, err
	}
	keys, err := changedKeys(ctx, src, r.Tenant, c.bulkSeq)
	if err != nil {
		return 0, err
	}
	if err := verify(ctx, src, dst, c.tables, r.Tenant, true, func(t *table, alias, schema string) (string, bool) {
		return deltaFilter(t, alias, schema, c.bulkSeq, keys)
	}); err != nil {
		return 0, err
	}
	if err := dstTx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit the fence's copy: %w", err)
	}
	return n, srcTx.Commit(ctx)
}

// drain waits, at most max, until no other session on the source database
// holds a snapshot older than the transaction xid that marked the tenant
// moved, unless it waits for a lock (the fence: it will find the mark). Such
// a session, in a REPEATABLE READ or SERIALIZABLE transaction that took its
// snapshot before the mark and had not yet asked for the fence, would not
// see the mark; once the fence is released it could pass. Waiting closes
// that window.
func drain(ctx context.Context, conn *pgx.Conn, xid string, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xmin IS NOT NULL
			  AND age(backend_xmin) >= age(($1::bigint % 4294967296)::text::xid)
			  AND wait_event_type IS DISTINCT FROM 'Lock'`, xid).Scan(&n)
		if err != nil || n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
