package move

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// table is a tenant table as a move copies it.
type table struct {
	name  string
	cols  []string // copied columns (generated ones are computed again), in the source's order
	types []string // their types, to compare source and destination
	pk    []string
	seqs  []string // columns with a sequence (identity or serial)
}

// audit reports whether t is one of the audit log's tables, which the fence
// copies by sequence number rather than by changed row.
func (t *table) audit() bool {
	return t.name == dataplane.AuditTable || t.name == dataplane.AuditHeadTable
}

// queryer runs queries: a connection or a transaction.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// tenantTables lists the tenant tables of schema (those with tenant_id, the
// audit log's included), parents before the tables whose foreign keys refer
// to them.
func tenantTables(ctx context.Context, q queryer, schema string) ([]*table, error) {
	rows, err := q.Query(ctx, `
		SELECT c.relname,
		       array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attgenerated = ''),
		       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FILTER (WHERE a.attgenerated = ''),
		       coalesce((SELECT array_agg(pa.attname::text ORDER BY x.n) FROM pg_index i
		                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
		                 JOIN pg_attribute pa ON pa.attrelid = c.oid AND pa.attnum = x.attnum
		                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
		       coalesce(array_agg(a.attname::text ORDER BY a.attnum)
		                FILTER (WHERE pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) IS NOT NULL), '{}')
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attname = 'tenant_id' AND NOT t.attisdropped)
		GROUP BY c.oid, c.relname, n.nspname
		ORDER BY c.relname`, schema)
	if err != nil {
		return nil, fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*table, error) {
		var t table
		err := r.Scan(&t.name, &t.cols, &t.types, &t.pk, &t.seqs)
		return &t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tenant tables of %s: %w", schema, err)
	}
	parents := map[string][]string{}
	rows, err = q.Query(ctx, `
		SELECT c.relname, r.relname FROM pg_constraint k
		JOIN pg_class c ON c.oid = k.conrelid
		JOIN pg_class r ON r.oid = k.confrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE k.contype = 'f' AND n.nspname = $1 AND k.conrelid <> k.confrelid`, schema)
	if err != nil {
		return nil, fmt.Errorf("list foreign keys of %s: %w", schema, err)
	}
	var child, parent string
	if _, err := pgx.ForEachRow(rows, []any{&child, &parent}, func() error {
		parents[child] = append(parents[child], parent)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list foreign keys of %s: %w", schema, err)
	}
	return fkOrder(tables, parents), nil
}

// fkOrder sorts tables so that each comes after the tables it refers to, the
// audit log's last; tables in a cycle keep their name order.
func fkOrder(tables []*table, parents map[string][]string) []*table {
	byName := map[string]*table{}
	for _, t := range tables {
		byName[t.name] = t
	}
	var out []*table
	done := map[string]bool{}
	visiting := map[string]bool{}
	var visit func(t *table)
	visit = func(t *table) {
		if done[t.name] || visiting[t.name] {
			return
		}
		visiting[t.name] = true
		for _, p := range parents[t.name] {
			if pt, ok := byName[p]; ok {
				visit(pt)
			}
		}
		visiting[t.name] = false
		done[t.name] = true
		out = append(out, t)
	}
	for _, t := range tables {
		if !t.audit() {
			visit(t)
		}
	}
	for _, t := range tables {
		visit(t)
	}
	return out
}

// sameTables fails with CodeConflict unless the destination has the same
// tenant tables as the source, with the same columns and types.
func sameTables(src, dst []*table) error {
	d := map[string]*table{}
	for _, t := range dst {
		d[t.name] = t
	}
	if len(src) != len(dst) {
		return tenancy.Errorf(tenancy.CodeConflict, "the destination has %d tenant tables, the source %d: bring both to the same data model version first", len(dst), len(src))
	}
	for _, s := range src {
		t, ok := d[s.name]
		if !ok {
			return tenancy.Errorf(tenancy.CodeConflict, "the destination has no table %s: bring both to the same data model version first", s.name)
		}
		types := map[string]string{}
		for i, c := range t.cols {
			types[c] = t.types[i]
		}
		if len(t.cols) != len(s.cols) {
			return tenancy.Errorf(tenancy.CodeConflict, "table %s has %d columns at the destination, %d at the source", s.name, len(t.cols), len(s.cols))
		}
		for i, c := range s.cols {
			if types[c] != s.types[i] {
				return tenancy.Errorf(tenancy.CodeConflict, "table %s: column %s is %q at the source and %q at the destination", s.name, c, s.types[i], types[c])
			}
		}
	}
	return nil
}

// colList is the table's copied columns, quoted and prefixed (alias "s." or "").
func (t *table) colList(prefix string) string {
	q := make([]string, len(t.cols))
	for i, c := range t.cols {
		q[i] = prefix + dataplane.Ident(c)
	}
	return strings.Join(q, ", ")
}

// keyFilter is the condition that selects the rows of t (aliased alias) whose
// primary keys are in keys, a JSON array of objects: row keys from the audit log.
func (t *table) keyFilter(alias, schema string, keys []byte) string {
	var l, r []string
	for _, c := range t.pk {
		l = append(l, alias+"."+dataplane.Ident(c))
		r = append(r, "k."+dataplane.Ident(c))
	}
	return "(" + strings.Join(l, ", ") + ") IN (SELECT " + strings.Join(r, ", ") + " FROM jsonb_populate_recordset(NULL::" +
		dataplane.Ident(schema, t.name) + ", " + dataplane.QuoteLiteral(string(keys)) + ") k)"
}

// tenantLiteral is the tenant's id as an SQL literal, for COPY (query), which
// takes no parameters. A uuid's text is safe as is.
func tenantLiteral(id uuid.UUID) string { return "'" + id.String() + "'::uuid" }

// names lists the tables' names, for messages.
func names(ts []*table) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.name
	}
	return slices.Clip(out)
}
