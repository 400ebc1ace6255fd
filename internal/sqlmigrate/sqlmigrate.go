// Package sqlmigrate loads versioned SQL migrations from an fs.FS and applies
// them inside a caller's transaction, recording version and checksum in a
// version table of the target. The catalog and the tenant data model both use it.
package sqlmigrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Migration is one versioned SQL file.
type Migration struct {
	Version  int
	Name     string
	SQL      string
	Checksum string // hex SHA-256 of SQL
}

var filePattern = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.sql$`)

// Load reads every *.sql file at the root of fsys, named NNN_name.sql, sorted by
// version. Versions must be positive and unique.
func Load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		m := filePattern.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: want a name like 001_create_contacts.sql", e.Name())
		}
		v, err := strconv.Atoi(m[1])
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %q: version must be a positive number", e.Name())
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migration files %q and %q have the same version %d", other, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %q: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(b), Checksum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// EnsureTable creates the version table if it does not exist. table must be
// already quoted (see pgx.Identifier.Sanitize).
func EnsureTable(ctx context.Context, tx pgx.Tx, table string) error {
	_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		checksum   text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return fmt.Errorf("create version table %s: %w", table, err)
	}
	return nil
}

// Applied returns the versions recorded in table with their checksums.
func Applied(ctx context.Context, tx pgx.Tx, table string) (map[int]string, error) {
	rows, err := tx.Query(ctx, `SELECT version, checksum FROM `+table)
	if err != nil {
		return nil, fmt.Errorf("read version table %s: %w", table, err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v int
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, err
		}
		out[v] = sum
	}
	return out, rows.Err()
}

// Apply runs, in tx, every migration not yet recorded in table, in order, and
// records each. It refuses to run when an applied migration's checksum differs
// from its file (drift), or when the target has a version the files do not
// know (the target is ahead). It returns the migrations it applied.
func Apply(ctx context.Context, tx pgx.Tx, table string, migrations []Migration) ([]Migration, error) {
	if err := EnsureTable(ctx, tx, table); err != nil {
		return nil, err
	}
	applied, err := Applied(ctx, tx, table)
	if err != nil {
		return nil, err
	}
	known := make(map[int]bool, len(migrations))
	for _, m := range migrations {
		known[m.Version] = true
		if sum, ok := applied[m.Version]; ok && sum != m.Checksum {
			return nil, fmt.Errorf("migration %d_%s was changed after it was applied (checksum %s in the database, %s in the file)", m.Version, m.Name, short(sum), short(m.Checksum))
		}
	}
	for v := range applied {
		if !known[v] {
			return nil, fmt.Errorf("the target has migration %d, which the migration files do not have: it is ahead of this code", v)
		}
	}
	var done []Migration
	for _, m := range migrations {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return done, fmt.Errorf("migration %d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+table+` (version, name, checksum) VALUES ($1, $2, $3)`, m.Version, m.Name, m.Checksum); err != nil {
			return done, fmt.Errorf("record migration %d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m)
	}
	return done, nil
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}
