package move

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// side is one end of a copy: a transaction as the server's administrator on
// the database and schema that hold the tenant there.
type side struct {
	tx     pgx.Tx
	schema string
}

// counter counts the bytes read through it.
type counter struct {
	r io.Reader
	n *atomic.Int64
}

func (c counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// copyRows streams the rows of t that where selects (a condition on the
// source, aliased s) from src to dst in PostgreSQL's binary COPY format, and
// returns how many rows. The destination must run with
// session_replication_role = replica, so that its triggers (audit, soft
// delete, foreign keys) do not fire for rows that are only being moved.
func copyRows(ctx context.Context, src, dst side, t *table, tenant uuid.UUID, where string, bytes *atomic.Int64) (int64, error) {
	out := "COPY (SELECT " + t.colList("s.") + " FROM " + dataplane.Ident(src.schema, t.name) + " s WHERE s.tenant_id = " +
		tenantLiteral(tenant)
	if where != "" {
		out += " AND " + where
	}
	out += ") TO STDOUT (FORMAT binary)"
	in := "COPY " + dataplane.Ident(dst.schema, t.name) + " (" + t.colList("") + ") FROM STDIN (FORMAT binary)"

	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		// pgconn hands over one row per Write and sends one message per
		// Read: buffered, the pipe carries 64 kB at a time instead.
		w := bufio.NewWriterSize(pw, 1<<16)
		_, err := src.tx.Conn().PgConn().CopyTo(ctx, w, out)
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
		sent <- err
	}()
	tag, err := dst.tx.Conn().PgConn().CopyFrom(ctx, counter{pr, bytes}, in)
	pr.CloseWithError(errors.New("the destination stopped reading"))
	srcErr := <-sent
	if srcErr != nil {
		return 0, fmt.Errorf("copy %s out of the source: %w", t.name, srcErr)
	}
	if err != nil {
		return 0, fmt.Errorf("copy %s into the destination: %w", t.name, err)
	}
	return tag.RowsAffected(), nil
}

// replica makes tx write as a replica does: no trigger fires (neither the
// audit log's, nor soft delete, nor foreign key checks), CHECK constraints
// still hold. It needs a superuser.
func replica(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		return fmt.Errorf("write without triggers (this needs a superuser's DSN for the server): %w", err)
	}
	return nil
}

// stable makes the text of values, which checksums hash, the same on every
// server whatever its defaults.
func stable(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true),
		set_config('IntervalStyle', 'postgres', true), set_config('extra_float_digits', '3', true),
		set_config('bytea_output', 'hex', true)`)
	return err
}

// lastSeq is the number of the tenant's last sealed audit entry that tx sees.
func lastSeq(ctx context.Context, s side, tenant uuid.UUID) (int64, error) {
	var seq int64
	err := s.tx.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM `+dataplane.Ident(s.schema, dataplane.AuditTable)+
		` WHERE tenant_id = $1`, tenant).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("read the audit log's last entry: %w", err)
	}
	return seq, nil
}

// changedKeys returns, by table, the keys of the tenant's rows changed by
// the audit entries after seq (a JSON array of row keys each).
func changedKeys(ctx context.Context, s side, tenant uuid.UUID, after int64) (map[string][]byte, error) {
	rows, err := s.tx.Query(ctx, `SELECT table_name, jsonb_agg(DISTINCT row_key)::text FROM `+
		dataplane.Ident(s.schema, dataplane.AuditTable)+` WHERE tenant_id = $1 AND seq > $2 GROUP BY table_name`, tenant, after)
	if err != nil {
		return nil, fmt.Errorf("read changed rows from the audit log: %w", err)
	}
	out := map[string][]byte{}
	var name, keys string
	_, err = pgx.ForEachRow(rows, []any{&name, &keys}, func() error {
		out[name] = []byte(keys)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read changed rows from the audit log: %w", err)
	}
	return out, nil
}

// deltaFilter is the condition that selects, in a table aliased alias of
// schema, the rows a delta after seq copies again: the audit entries after
// seq, the chain head, and the rows those entries name. ok is false when
// nothing of t changed.
func deltaFilter(t *table, alias, schema string, after int64, keys map[string][]byte) (where string, ok bool) {
	switch t.name {
	case dataplane.AuditTable:
		return fmt.Sprintf("%s.seq > %d", alias, after), true
	case dataplane.AuditHeadTable:
		return "true", true
	}
	k, changed := keys[t.name]
	if !changed {
		return "", false
	}
	return t.keyFilter(alias, schema, k), true
}

// copyDelta copies again, from src to dst, every row changed after the audit
// entry seq: at the destination it deletes those rows (by key) and copies
// them from the source as they are now, soft-deleted or purged included. It
// returns how many rows it copied.
func copyDelta(ctx context.Context, src, dst side, tables []*table, tenant uuid.UUID, after int64, bytes *atomic.Int64) (int64, error) {
	keys, err := changedKeys(ctx, src, tenant, after)
	if err != nil {
		return 0, err
	}
	var total int64
	for i := len(tables) - 1; i >= 0; i-- { // children first, though no trigger fires
		t := tables[i]
		where, ok := deltaFilter(t, "d", dst.schema, after, keys)
		if !ok {
			continue
		}
		if _, err := dst.tx.Exec(ctx, `DELETE FROM `+dataplane.Ident(dst.schema, t.name)+` d WHERE d.tenant_id = $1 AND `+where, tenant); err != nil {
			return 0, fmt.Errorf("delete changed rows of %s at the destination: %w", t.name, err)
		}
	}
	for _, t := range tables {
		where, ok := deltaFilter(t, "s", src.schema, after, keys)
		if !ok {
			continue
		}
		n, err := copyRows(ctx, src, dst, t, tenant, where, bytes)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// copySequences moves every sequence of the tenant tables forward at the
// destination to at least where it is at the source, so that new rows there
// take new ids. Sequences never go back: in the shared model one sequence
// serves every tenant.
func copySequences(ctx context.Context, src, dst side, tables []*table) error {
	for _, t := range tables {
		for _, c := range t.seqs {
			var last *int64
			if err := src.tx.QueryRow(ctx, `SELECT pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass)`,
				dataplane.Ident(src.schema, t.name), c).Scan(&last); err != nil {
				return fmt.Errorf("read the sequence of %s.%s: %w", t.name, c, err)
			}
			if last == nil {
				continue // never used
			}
			if _, err := dst.tx.Exec(ctx, `SELECT setval(s, greatest($3, coalesce(pg_sequence_last_value(s), 0)))
				FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS s) x`,
				dataplane.Ident(dst.schema, t.name), c, *last); err != nil {
				return fmt.Errorf("move the sequence of %s.%s: %w", t.name, c, err)
			}
		}
	}
	return nil
}

// sum is a table's row count and content checksum for one tenant.
type sum struct {
	Rows int64
	Hash string // the sum of a 64-bit hash of each row's text, as a decimal
}

// tableSum counts the tenant's rows of t that where selects (alias s; "" for
// all) and, with hash, sums a hash of their content. Call stable first.
func tableSum(ctx context.Context, s side, t *table, tenant uuid.UUID, where string, hash bool) (sum, error) {
	if where == "" {
		where = "true"
	}
	h := "''"
	if hash {
		h = "coalesce(sum(hashtextextended(ROW(" + t.colList("s.") + ")::text, 0)::numeric), 0)::text"
	}
	var out sum
	err := s.tx.QueryRow(ctx, `SELECT count(*), `+h+` FROM `+dataplane.Ident(s.schema, t.name)+` s
		WHERE s.tenant_id = $1 AND `+where, tenant).Scan(&out.Rows, &out.Hash)
	if err != nil {
		return sum{}, fmt.Errorf("checksum %s: %w", t.name, err)
	}
	return out, nil
}

// dropSecondaryIndexes drops, in tx, the indexes of schema's tables that back
// no constraint, and returns the statements that create them again.
func dropSecondaryIndexes(ctx context.Context, tx pgx.Tx, schema string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid)
		FROM pg_index i
		JOIN pg_class ic ON ic.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = ic.relnamespace
		WHERE n.nspname = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)`, schema)
	if err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", schema, err)
	}
	var names, defs []string
	var name, def string
	if _, err := pgx.ForEachRow(rows, []any{&name, &def}, func() error {
		names, defs = append(names, name), append(defs, def)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", schema, err)
	}
	for _, n := range names {
		if _, err := tx.Exec(ctx, "DROP INDEX "+n); err != nil {
			return nil, fmt.Errorf("drop index %s: %w", n, err)
		}
	}
	return defs, nil
}
