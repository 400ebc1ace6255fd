// Package dataplane holds the SQL that prepares PostgreSQL for tenants: the
// application role, the tenancy schema with the signed tenant setting that
// every Row-Level Security policy reads, and tenant schemas, roles and
// databases. It runs with the server's administrative connection.
package dataplane

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the functions here need: a *pgx.Conn, a pool or a pgx.Tx.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Ident quotes an SQL identifier with the driver's sanitizer.
func Ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// EnsureAppRole creates the application role if it does not exist: it can log
// in, is not a superuser, cannot bypass Row-Level Security and does not inherit
// the rights of the tenant roles it is a member of (it must SET ROLE to use
// them). password may be empty (trust or certificate authentication).
func EnsureAppRole(ctx context.Context, q Querier, role, password string) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("look up role %s: %w", role, err)
	}
	attrs := " LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT NOCREATEDB NOCREATEROLE"
	if password != "" {
		attrs += " PASSWORD " + QuoteLiteral(password)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	_, err := q.Exec(ctx, verb+" ROLE "+Ident(role)+" WITH"+attrs)
	if err != nil && !isDuplicate(err) {
		return fmt.Errorf("%s role %s: %w", verb, role, err)
	}
	// Every router connection logs in as this role, and a role sees the query
	// text of its own other sessions in pg_stat_activity: with activity
	// tracking on, SQL in one tenant's transaction could read another
	// tenant's BEGIN. track_activities can only be changed by a superuser, so
	// the role cannot turn it back on.
	if _, err := q.Exec(ctx, "ALTER ROLE "+Ident(role)+" SET track_activities = off"); err != nil {
		return fmt.Errorf("turn off activity tracking for role %s (this needs a superuser, or SET privilege on track_activities): %w", role, err)
	}
	return nil
}

// EnsureTenantRole creates a tenant's NOLOGIN role, if missing, and lets the
// application role SET ROLE to it. The role may exist already (a tenant
// moving to another placement on its server): it is looked up first, since
// a failed CREATE ROLE would abort the caller's transaction.
func EnsureTenantRole(ctx context.Context, q Querier, role, appRole string) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("look up role %s: %w", role, err)
	}
	if !exists {
		_, err := q.Exec(ctx, "CREATE ROLE "+Ident(role)+" NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT")
		if err != nil && !isDuplicate(err) {
			return fmt.Errorf("create role %s: %w", role, err)
		}
	}
	if _, err := q.Exec(ctx, "GRANT "+Ident(role)+" TO "+Ident(appRole)); err != nil {
		return fmt.Errorf("grant role %s to %s: %w", role, appRole, err)
	}
	return nil
}

// DropRole drops a role if it exists, with whatever it was granted in the
// current database.
func DropRole(ctx context.Context, q Querier, role string) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil || !exists {
		return err
	}
	if _, err := q.Exec(ctx, "DROP OWNED BY "+Ident(role)); err != nil {
		return fmt.Errorf("drop grants of role %s: %w", role, err)
	}
	if _, err := q.Exec(ctx, "DROP ROLE IF EXISTS "+Ident(role)); err != nil {
		return fmt.Errorf("drop role %s: %w", role, err)
	}
	return nil
}

// BootstrapDatabase prepares the current database for tenant tables: the
// tenancy schema, the platform key and tenancy.current_tenant_id(), the function
// every tenant table's policy calls. It is idempotent.
//
// current_tenant_id() raises, rather than matching nothing, when the
// transaction names no tenant (the setting was never set on this connection,
// or reads ” after an earlier transaction set it), and when the tenant
// setting is not signed with the platform key: raw SQL that calls
// set_config('app.tenant_id', …) itself cannot choose another tenant. The
// signature covers the backend's pid, so one read from another session (in
// pg_stat_activity) does not work on the reader's own connection.
//
// The signature is HMAC-SHA256, checked with the built-in sha256() over the
// key's inner and outer pads, stored beside the key: one lookup and two hashes
// per statement, and no extension to install.
func BootstrapDatabase(ctx context.Context, q Querier, key []byte) error {
	stmts := []string{
		`CREATE SCHEMA IF NOT EXISTS tenancy`,
		`REVOKE ALL ON SCHEMA tenancy FROM PUBLIC`,
		`GRANT USAGE ON SCHEMA tenancy TO PUBLIC`,
		`CREATE TABLE IF NOT EXISTS tenancy.key (id integer PRIMARY KEY CHECK (id = 1), ipad bytea NOT NULL, opad bytea NOT NULL)`,
		`REVOKE ALL ON tenancy.key FROM PUBLIC`,
		`CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
		LANGUAGE plpgsql STABLE SECURITY DEFINER
		SET search_path = pg_catalog, pg_temp AS $fn$
		DECLARE
			t text := current_setting('app.tenant_id');
			s text := current_setting('app.tenant_sig', true);
			ok boolean;
		BEGIN
			IF t = '' THEN
				RAISE EXCEPTION 'tenancy: no tenant in this transaction' USING ERRCODE = '42501';
			END IF;
			SELECT s = encode(sha256(k.opad || sha256(k.ipad || convert_to(t || ':' || pg_backend_pid(), 'UTF8'))), 'hex')
				INTO ok FROM tenancy.key k WHERE k.id = 1;
			IF ok IS NOT TRUE THEN
				RAISE EXCEPTION 'tenancy: the tenant setting was not made by the router' USING ERRCODE = '42501';
			END IF;
			RETURN t::uuid;
		END $fn$`,
		`REVOKE ALL ON FUNCTION tenancy.current_tenant_id() FROM PUBLIC`,
		`GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id() TO PUBLIC`,
	}
	for _, s := range stmts {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("bootstrap tenancy schema: %w", err)
		}
	}
	ipad, opad := hmacPads(key)
	if _, err := q.Exec(ctx, `INSERT INTO tenancy.key (id, ipad, opad) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET ipad = EXCLUDED.ipad, opad = EXCLUDED.opad`, ipad, opad); err != nil {
		return fmt.Errorf("store platform key: %w", err)
	}
	return nil
}

// hmacPads returns HMAC-SHA256's inner and outer padded keys (RFC 2104), so
// that HMAC(key, m) = sha256(opad || sha256(ipad || m)).
func hmacPads(key []byte) (ipad, opad []byte) {
	const block = 64 // SHA-256's block size
	if len(key) > block {
		sum := sha256.Sum256(key)
		key = sum[:]
	}
	ipad, opad = make([]byte, block), make([]byte, block)
	copy(ipad, key)
	copy(opad, key)
	for i := range block {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	return ipad, opad
}

// EnsureSchema creates a schema, if missing, that only grantee may use.
func EnsureSchema(ctx context.Context, q Querier, schema, grantee string) error {
	for _, s := range []string{
		"CREATE SCHEMA IF NOT EXISTS " + Ident(schema),
		"REVOKE ALL ON SCHEMA " + Ident(schema) + " FROM PUBLIC",
		"GRANT USAGE ON SCHEMA " + Ident(schema) + " TO " + Ident(grantee),
	} {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("prepare schema %s: %w", schema, err)
		}
	}
	return nil
}

// CreateDatabase creates a database, if missing, restricted as by RestrictDatabase.
// It cannot run inside a transaction.
func CreateDatabase(ctx context.Context, q Querier, db, template, appRole string) error {
	sql := "CREATE DATABASE " + Ident(db)
	if template != "" {
		sql += " TEMPLATE " + Ident(template)
	}
	if _, err := q.Exec(ctx, sql); err != nil && !isDuplicate(err) {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return RestrictDatabase(ctx, q, db, appRole)
}

// RestrictDatabase lets only appRole (besides the administrator) connect to
// db, and nobody create temporary objects there: a temporary table outlives
// the transaction on a pooled connection.
func RestrictDatabase(ctx context.Context, q Querier, db, appRole string) error {
	for _, s := range []string{
		"REVOKE ALL ON DATABASE " + Ident(db) + " FROM PUBLIC",
		"REVOKE TEMPORARY ON DATABASE " + Ident(db) + " FROM " + Ident(appRole),
		"GRANT CONNECT ON DATABASE " + Ident(db) + " TO " + Ident(appRole),
	} {
		if _, err := q.Exec(ctx, s); err != nil {
			return fmt.Errorf("restrict database %s: %w", db, err)
		}
	}
	return nil
}

// DropDatabase drops a database if it exists, closing its connections.
//
// A session still creating the database (as CreateDatabase spells it) is
// ended first, and waited for: the backend of a process that died in CREATE
// DATABASE goes on to the end, and the database, which no other session sees
// until then, would appear after the drop, claimed by nobody. Only the
// tenant's own operations, under its lock, create its database, so such a
// session belongs to a dead process.
func DropDatabase(ctx context.Context, q Querier, db string) error {
	var stuck int
	err := q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND state = 'active' AND (query = $1 OR starts_with(query, $1 || ' '))`,
		"CREATE DATABASE "+Ident(db)).Scan(&stuck)
	if err != nil {
		return fmt.Errorf("end the sessions creating database %s: %w", db, err)
	}
	if stuck > 0 {
		return fmt.Errorf("drop database %s: %d sessions creating it did not end within 10s", db, stuck)
	}
	if _, err := q.Exec(ctx, "DROP DATABASE IF EXISTS "+Ident(db)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}

func isDuplicate(err error) bool {
	var pgErr *pgconn.PgError
	// 42710 duplicate_object (role), 42P04 duplicate_database; 23505 when two
	// sessions create the same role at once.
	return errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "42P04" || pgErr.Code == "23505")
}
