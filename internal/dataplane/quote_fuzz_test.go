package dataplane_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// FuzzQuote runs Ident and QuoteLiteral on real PostgreSQL with any name:
// CREATE SCHEMA with the quoted name creates exactly one schema, named
// exactly so, and the quoted literal reads back as itself. Whatever the
// input, the statement is never a syntax error: the quoting holds. (Names
// are text without NUL, of 1 to 63 bytes, as PostgreSQL keeps them; every
// caller validates that first.)
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"acme", `a"; DROP SCHEMA public; --`, `a""b`, `"`, `""`, `'`, `\`, `\'`, `a'; SELECT 1; --`,
		"é", "\u202e", "a b", "a\nb", "$$", "$1", "tenant_acme", "pg_x", "public", "AcMe", strings.Repeat("x", 63), `E'\''`} {
		f.Add(s)
	}
	srv := pgtest.DefaultServer(f)
	db := srv.NewDatabase(f, "")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.URL(db))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close(ctx) })

	f.Fuzz(func(t *testing.T, s string) {
		if s == "" || len(s) > 63 || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return
		}
		var lit string
		if err := conn.QueryRow(ctx, `SELECT `+dataplane.QuoteLiteral(s)).Scan(&lit); err != nil || lit != s {
			t.Fatalf("literal %s reads %q, %v", dataplane.QuoteLiteral(s), lit, err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		var before []string
		if err := tx.QueryRow(ctx, `SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace`).Scan(&before); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, `CREATE SCHEMA `+dataplane.Ident(s))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code != "42601" {
			return // refused as the name it is (reserved pg_ prefix, taken)
		}
		if err != nil {
			t.Fatalf("CREATE SCHEMA %s: %v", dataplane.Ident(s), err)
		}
		var after []string
		if err := tx.QueryRow(ctx, `SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace`).Scan(&after); err != nil {
			t.Fatal(err)
		}
		var added []string
		for _, n := range after {
			if !slices.Contains(before, n) {
				added = append(added, n)
			}
		}
		if len(after) != len(before)+1 || len(added) != 1 || added[0] != s {
			t.Fatalf("CREATE SCHEMA %s added %q", dataplane.Ident(s), added)
		}
	})
}
