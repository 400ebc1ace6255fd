// Package audit reads and verifies the per-tenant audit log.
//
// The log is written by PostgreSQL, not by application code: every tenant
// table has an AFTER trigger that records each insert, update, soft delete,
// restore and purge — table, row key, operation, the changed columns with old
// and new values (columns commented 'tenancy:redact' are masked), and the
// actor, client IP, user agent and request id that the router put into the
// transaction's settings. The log lives beside the tenant's tables (the shared
// tables, its schema or its database), in the table tenancy_audit, so it moves
// and is purged with the tenant.
//
// The application role may read its tenant's entries and nothing more. Each
// tenant's entries form a hash chain: at commit, a deferred trigger locks the
// tenant's chain head, numbers the transaction's entries and hashes each with
// the previous one (tenancy.audit_digest). Writers of one tenant therefore
// queue only for the moment of their commit. Verify recomputes the chain and
// names the first entry that was altered, removed or moved.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// Querier runs queries: a pgx.Tx from router.Tx (the tenant's own view) or
// an administrative connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Entry is one recorded change.
type Entry struct {
	// ID orders entries as they were written and is List's cursor; Seq is
	// the entry's place in the hash chain, given at commit.
	ID        int64           `json:"id"`
	Seq       int64           `json:"seq"`
	At        time.Time       `json:"at"`
	Table     string          `json:"table"`
	RowKey    json.RawMessage `json:"row_key"`
	Op        string          `json:"op"` // insert, update, delete, restore or purge
	Changes   json.RawMessage `json:"changes"`
	Actor     string          `json:"actor,omitempty"`
	ClientIP  string          `json:"client_ip,omitempty"`
	UserAgent string          `json:"user_agent,omitempty"`
	RequestID string          `json:"request_id,omitempty"`
}

// ListOpts filter and page List. Nil means the first page of everything.
type ListOpts struct {
	Since, Until time.Time // entries at or after Since and before Until; zero: unbounded
	Actor        string    // exact actor, e.g. "user:42"
	Table        string    // one table
	// Row selects the entries of one row by its key, e.g. {"id": 7}.
	Row map[string]any
	// After is the cursor: the ID of the last entry of the previous page.
	After int64
	// Limit is the page size: default 100, at most 1000.
	Limit int
}

// ParseRow reads a row's key given as a JSON object, e.g. {"id": 7}, for
// ListOpts.Row. The error (CodeInvalid) names the field "row".
func ParseRow(s string) (map[string]any, error) {
	var row map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&row); err != nil || row == nil || d.More() || len(row) == 0 {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "row", `row must be a row's key as a JSON object, e.g. {"id": 7}`)
	}
	return row, nil
}

// List returns a page of tenant's entries in schema, oldest first, and the
// cursor for the next page (0 when this is the last).
func List(ctx context.Context, q Querier, schema string, tenant uuid.UUID, opts *ListOpts) ([]Entry, int64, error) {
	if opts == nil {
		opts = &ListOpts{}
	}
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return nil, 0, tenancy.FieldErrorf(tenancy.CodeInvalid, "limit", "limit must be between 1 and 1000, got %d", limit)
	}
	if opts.After < 0 {
		return nil, 0, tenancy.FieldErrorf(tenancy.CodeInvalid, "after", "cursor must not be negative, got %d", opts.After)
	}
	var row []byte
	if len(opts.Row) > 0 {
		var err error
		if row, err = json.Marshal(opts.Row); err != nil {
			return nil, 0, tenancy.Errorf(tenancy.CodeInvalid, "row key: %v", err)
		}
	}
	var since, until *time.Time
	if !opts.Since.IsZero() {
		since = &opts.Since
	}
	if !opts.Until.IsZero() {
		until = &opts.Until
	}
	rows, err := q.Query(ctx, `SELECT id, seq, at, table_name, row_key, op, changes, actor, client_ip, user_agent, request_id
		FROM `+dataplane.Ident(schema, dataplane.AuditTable)+`
		WHERE tenant_id = $1 AND id > $2 AND hash IS NOT NULL
		  AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
		  AND ($5 = '' OR actor = $5) AND ($6 = '' OR table_name = $6) AND ($7::jsonb IS NULL OR row_key @> $7)
		ORDER BY id LIMIT $8`,
		tenant, opts.After, since, until, opts.Actor, opts.Table, row, limit+1)
	if err != nil {
		return nil, 0, fmt.Errorf("read audit log: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		err := r.Scan(&e.ID, &e.Seq, &e.At, &e.Table, &e.RowKey, &e.Op, &e.Changes, &e.Actor, &e.ClientIP, &e.UserAgent, &e.RequestID)
		return e, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read audit log: %w", err)
	}
	var next int64
	if len(entries) > limit {
		entries = entries[:limit]
		next = entries[limit-1].ID
	}
	return entries, next, nil
}

// Verification is the outcome of Verify.
type Verification struct {
	// Entries is how many sealed entries were checked.
	Entries int64 `json:"entries"`
	// OK is true when the chain is intact.
	OK bool `json:"ok"`
	// FirstBad is the sequence number of the first entry that does not
	// check, and Reason what is wrong with it; zero when OK.
	FirstBad int64  `json:"first_bad,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// HeadChecked says whether the chain's head (readable by the
	// administrator only) was compared too, which catches entries removed
	// from the end.
	HeadChecked bool `json:"head_checked"`
}

// Verify recomputes tenant's hash chain in schema and reports the first entry
// that was altered, removed or moved.
func Verify(ctx context.Context, q Querier, schema string, tenant uuid.UUID) (*Verification, error) {
	rows, err := q.Query(ctx, `SELECT seq, prev_hash, hash, tenancy.audit_digest(prev_hash, tenant_id, seq, at, table_name, row_key,
			op, changes, actor, client_ip, user_agent, request_id)
		FROM `+dataplane.Ident(schema, dataplane.AuditTable)+` WHERE tenant_id = $1 AND hash IS NOT NULL ORDER BY seq, id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	v := &Verification{OK: true}
	var prev []byte
	bad := func(seq int64, format string, args ...any) {
		if v.OK {
			v.OK, v.FirstBad, v.Reason = false, seq, fmt.Sprintf(format, args...)
		}
	}
	for rows.Next() {
		var seq int64
		var prevHash, hash, want []byte
		if err := rows.Scan(&seq, &prevHash, &hash, &want); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		v.Entries++
		switch {
		case seq != v.Entries:
			if seq > v.Entries {
				bad(seq, "entry %d comes after entry %d: %d entries are missing", seq, v.Entries-1, seq-v.Entries)
			} else {
				bad(seq, "entry %d appears twice", seq)
			}
		case !bytes.Equal(prevHash, prev):
			bad(seq, "entry %d does not follow entry %d: removed, inserted or moved", seq, seq-1)
		case !bytes.Equal(hash, want):
			bad(seq, "entry %d was altered: its content does not match its hash", seq)
		}
		prev = hash
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	var headSeq int64
	var headHash []byte
	err = q.QueryRow(ctx, `SELECT seq, hash FROM `+dataplane.Ident(schema, dataplane.AuditHeadTable)+` WHERE tenant_id = $1`, tenant).Scan(&headSeq, &headHash)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42501": // the tenant's own view: no right on the head
		return v, nil
	case errors.Is(err, pgx.ErrNoRows):
		v.HeadChecked = true
		if v.Entries > 0 {
			bad(1, "the log has %d entries but no chain head", v.Entries)
		}
		return v, nil
	case err != nil:
		return nil, fmt.Errorf("read audit chain head: %w", err)
	}
	v.HeadChecked = true
	if headSeq != v.Entries || !bytes.Equal(headHash, prev) {
		bad(v.Entries+1, "the chain head is at entry %d but the log ends at entry %d: entries were removed from the end", headSeq, v.Entries)
	}
	return v, nil
}
