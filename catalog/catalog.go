package catalog

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgerr"
	"github.com/tenancyhq/tenancy/internal/sqlmigrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Channel is the LISTEN/NOTIFY channel on which the catalog announces changes.
const Channel = "tenancy_catalog"

const versionTable = "catalog.schema_migrations"

// Catalog reads and writes the control plane.
type Catalog struct {
	pool     *pgxpool.Pool
	aead     cipher.AEAD   // encrypts servers' DSNs; nil: stored in clear (see SetSecretKey)
	previous []cipher.AEAD // older keys, which still decrypt

	locksOnce sync.Once
	locks     *pgxpool.Pool // connections holding tenant locks; see LockTenant
	locksErr  error
}

// Open connects to the catalog database at url. It does not change the
// database: call Migrate to create or upgrade the catalog's tables.
func Open(ctx context.Context, url string) (*Catalog, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "catalog url: %w", err)
	}
	if cfg.MaxConns < 4 {
		cfg.MaxConns = 4
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, dbError("open catalog: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, dbError("connect to catalog: %w", err)
	}
	return &Catalog{pool: pool}, nil
}

// Close closes the catalog's connections.
func (c *Catalog) Close() {
	c.locksOnce.Do(func() {}) // no lock pool after Close
	if c.locks != nil {
		c.locks.Close()
	}
	c.pool.Close()
}

// Pool returns the catalog's connection pool, for packages of this module that
// keep their own control-plane tables beside the catalog's.
func (c *Catalog) Pool() *pgxpool.Pool { return c.pool }

// Migrate creates or upgrades the catalog's tables. It is safe to run from
// several processes at once: an advisory lock makes them take turns.
func (c *Catalog) Migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	migrations, err := sqlmigrate.Load(sub)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenancy.catalog.migrate'))`); err != nil {
			return dbError("lock catalog migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS catalog`); err != nil {
			return dbError("create catalog schema: %w", err)
		}
		if _, err := sqlmigrate.Apply(ctx, tx, versionTable, migrations); err != nil {
			return dbError("migrate catalog: %w", err)
		}
		return nil
	})
}

// TenantKey returns the platform's secret key that signs tenant settings in
// data-plane transactions (see router), creating it on first use.
func (c *Catalog) TenantKey(ctx context.Context) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	err := c.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO catalog.settings (key, value) VALUES ('tenant_key', $1)
			ON CONFLICT (key) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM catalog.settings WHERE key = 'tenant_key'
		LIMIT 1`, key).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		// Another process inserted the key after this statement took its
		// snapshot: ON CONFLICT DO NOTHING waited for it, but the statement
		// cannot see its row. A new statement can.
		err = c.pool.QueryRow(ctx, `SELECT value FROM catalog.settings WHERE key = 'tenant_key'`).Scan(&key)
	}
	if err != nil {
		return nil, dbError("read tenant key: %w", err)
	}
	return key, nil
}

// AddServer records a server of the data plane. The name must be a slug and
// unused.
func (c *Catalog) AddServer(ctx context.Context, s *tenancy.Server) error {
	if err := tenancy.ValidateName("server name", s.Name); err != nil {
		return err
	}
	if s.DSN == "" {
		return tenancy.Errorf(tenancy.CodeInvalid, "server %q: a DSN is required", s.Name)
	}
	if _, err := pgconn.ParseConfig(s.DSN); err != nil {
		return tenancy.Errorf(tenancy.CodeInvalid, "server %q: invalid DSN: %w", s.Name, errors.Unwrap(err))
	}
	if s.AppDSN != "" {
		if _, err := pgconn.ParseConfig(s.AppDSN); err != nil {
			return tenancy.Errorf(tenancy.CodeInvalid, "server %q: invalid app DSN: %w", s.Name, errors.Unwrap(err))
		}
	}
	if s.Capacity == 0 {
		s.Capacity = 1000
	}
	if s.Capacity < 0 {
		return tenancy.Errorf(tenancy.CodeInvalid, "server %q: capacity must be positive", s.Name)
	}
	err := c.pool.QueryRow(ctx, `
		INSERT INTO catalog.servers (name, dsn, app_dsn, region, capacity) VALUES ($1, $2, $3, $4, $5)
		RETURNING created_at`, s.Name, c.seal(s.Name, s.DSN), c.seal(s.Name, s.AppDSN), s.Region, s.Capacity).Scan(&s.CreatedAt)
	if isUniqueViolation(err) {
		return tenancy.Errorf(tenancy.CodeConflict, "server %q already exists", s.Name)
	}
	if err != nil {
		return dbError("add server %q: %w", s.Name, err)
	}
	return nil
}

const serverColumns = `name, dsn, app_dsn, region, capacity, created_at`

func scanServer(row pgx.Row) (*tenancy.Server, error) {
	var s tenancy.Server
	err := row.Scan(&s.Name, &s.DSN, &s.AppDSN, &s.Region, &s.Capacity, &s.CreatedAt)
	return &s, err
}

// Server returns the server with the given name.
func (c *Catalog) Server(ctx context.Context, name string) (*tenancy.Server, error) {
	s, err := scanServer(c.pool.QueryRow(ctx, `SELECT `+serverColumns+` FROM catalog.servers WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "server %q not found", name)
	}
	if err != nil {
		return nil, dbError("read server %q: %w", name, err)
	}
	if err := c.revealServer(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Servers returns every server, by name.
func (c *Catalog) Servers(ctx context.Context) ([]*tenancy.Server, error) {
	rows, err := c.pool.Query(ctx, `SELECT `+serverColumns+` FROM catalog.servers ORDER BY name`)
	if err != nil {
		return nil, dbError("list servers: %w", err)
	}
	ss, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Server, error) { return scanServer(r) })
	if err != nil {
		return nil, dbError("list servers: %w", err)
	}
	for _, s := range ss {
		if err := c.revealServer(s); err != nil {
			return nil, err
		}
	}
	return ss, nil
}

const tenantColumns = `id, slug, name, tier, model, server, database, schema, status, created_at, updated_at, deleted_at, version`

func scanTenant(row pgx.Row) (*tenancy.Tenant, error) {
	var t tenancy.Tenant
	err := row.Scan(&t.ID, &t.Slug, &t.Name, &t.Tier, &t.Model, &t.Placement.Server, &t.Placement.Database,
		&t.Placement.Schema, &t.Status, &t.CreatedAt, &t.UpdatedAt, &t.DeletedAt, &t.Version)
	return &t, err
}

// CreateTenant inserts t. Its ID is generated when nil; CreatedAt, UpdatedAt
// and Version are filled in from the database.
func (c *Catalog) CreateTenant(ctx context.Context, t *tenancy.Tenant) error {
	return createTenant(ctx, c.pool, t)
}

// CreateTenantTx is CreateTenant in the caller's catalog transaction.
func CreateTenantTx(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant) error {
	return createTenant(ctx, tx, t)
}

func createTenant(ctx context.Context, q querier, t *tenancy.Tenant) error {
	if err := tenancy.ValidateSlug(t.Slug); err != nil {
		return err
	}
	if _, err := tenancy.ParseModel(string(t.Model)); err != nil {
		return err
	}
	if t.ID == uuid.Nil {
		t.ID = uuid.New()
	}
	err := q.QueryRow(ctx, `
		INSERT INTO catalog.tenants (id, slug, name, tier, model, server, database, schema, status)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING created_at, updated_at, version`,
		t.ID, t.Slug, t.Name, t.Tier, t.Model, t.Placement.Server, t.Placement.Database, t.Placement.Schema, t.Status,
	).Scan(&t.CreatedAt, &t.UpdatedAt, &t.Version)
	if isUniqueViolation(err) {
		return tenancy.Errorf(tenancy.CodeConflict, "tenant %q already exists", t.Slug)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		return tenancy.Errorf(tenancy.CodeNotFound, "server %q not found", t.Placement.Server)
	}
	if err != nil {
		return dbError("create tenant %q: %w", t.Slug, err)
	}
	return nil
}

// Tenant returns the tenant with the given id.
func (c *Catalog) Tenant(ctx context.Context, id uuid.UUID) (*tenancy.Tenant, error) {
	return c.oneTenant(ctx, `id = $1`, id, id.String())
}

// TenantBySlug returns the tenant with the given slug.
func (c *Catalog) TenantBySlug(ctx context.Context, slug string) (*tenancy.Tenant, error) {
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, err
	}
	return c.oneTenant(ctx, `slug = $1`, slug, slug)
}

func (c *Catalog) oneTenant(ctx context.Context, where string, arg any, name string) (*tenancy.Tenant, error) {
	t, err := scanTenant(c.pool.QueryRow(ctx, `SELECT `+tenantColumns+` FROM catalog.tenants WHERE `+where, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", name)
	}
	if err != nil {
		return nil, dbError("read tenant %q: %w", name, err)
	}
	return t, nil
}

// ListOpts filters Tenants. The zero value lists every tenant.
type ListOpts struct {
	Server string         // only tenants placed on this server
	Model  tenancy.Model  // only tenants of this model
	Status tenancy.Status // only tenants in this status
}

// Tenants lists tenants by slug.
func (c *Catalog) Tenants(ctx context.Context, opts *ListOpts) ([]*tenancy.Tenant, error) {
	if opts == nil {
		opts = &ListOpts{}
	}
	rows, err := c.pool.Query(ctx, `SELECT `+tenantColumns+` FROM catalog.tenants
		WHERE ($1 = '' OR server = $1) AND ($2 = '' OR model = $2) AND ($3 = '' OR status = $3)
		ORDER BY slug`, opts.Server, string(opts.Model), string(opts.Status))
	if err != nil {
		return nil, dbError("list tenants: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*tenancy.Tenant, error) { return scanTenant(r) })
}

// SetStatus changes a tenant's status from one of the statuses in from to to,
// and returns the updated tenant. It fails with CodeConflict when the tenant is
// in none of from (for example resuming a tenant that is not suspended).
func (c *Catalog) SetStatus(ctx context.Context, id uuid.UUID, to tenancy.Status, from ...tenancy.Status) (*tenancy.Tenant, error) {
	return setStatus(ctx, c.pool, id, to, from)
}

// SetStatusTx is SetStatus in the caller's catalog transaction.
func SetStatusTx(ctx context.Context, tx pgx.Tx, id uuid.UUID, to tenancy.Status, from ...tenancy.Status) (*tenancy.Tenant, error) {
	return setStatus(ctx, tx, id, to, from)
}

func setStatus(ctx context.Context, q querier, id uuid.UUID, to tenancy.Status, from []tenancy.Status) (*tenancy.Tenant, error) {
	fromText := make([]string, len(from))
	for i, s := range from {
		fromText[i] = string(s)
	}
	t, err := scanTenant(q.QueryRow(ctx, `
		UPDATE catalog.tenants SET status = $2,
			deleted_at = CASE WHEN $2 = 'deleted' THEN now() WHEN $2 = 'purged' THEN deleted_at
				WHEN status = 'deleted' THEN NULL ELSE deleted_at END
		WHERE id = $1 AND status = ANY($3)
		RETURNING `+tenantColumns, id, string(to), fromText))
	if errors.Is(err, pgx.ErrNoRows) {
		cur, err := scanTenant(q.QueryRow(ctx, `SELECT `+tenantColumns+` FROM catalog.tenants WHERE id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, tenancy.Errorf(tenancy.CodeNotFound, "tenant %q not found", id)
		}
		if err != nil {
			return nil, dbError("read tenant %s: %w", id, err)
		}
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is %s: cannot make it %s", cur.Slug, cur.Status, to)
	}
	if err != nil {
		return nil, dbError("set status of tenant %s: %w", id, err)
	}
	return t, nil
}

// DeleteTenantRow removes a tenant's catalog row. Only provisioning uses it, to
// roll back a tenant whose storage was never created.
func (c *Catalog) DeleteTenantRow(ctx context.Context, id uuid.UUID) error {
	return deleteTenantRow(ctx, c.pool, id)
}

// DeleteTenantRowTx is DeleteTenantRow in the caller's catalog transaction.
func DeleteTenantRowTx(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	return deleteTenantRow(ctx, tx, id)
}

func deleteTenantRow(ctx context.Context, q querier, id uuid.UUID) error {
	_, err := q.Exec(ctx, `DELETE FROM catalog.tenants WHERE id = $1 AND status = 'provisioning'`, id)
	if err != nil {
		return dbError("delete tenant row %s: %w", id, err)
	}
	return nil
}

// querier is what the catalog's statements run on: its pool or a caller's
// transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// dbError wraps a failed catalog query: with CodeUnavailable when the catalog
// database itself failed (unreachable, restarting), so that callers answer
// 503 and may retry; as a plain error otherwise.
func dbError(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if pgerr.ServerFailure(errors.Unwrap(err)) {
		return tenancy.Errorf(tenancy.CodeUnavailable, "the catalog is unavailable; retry later: %w", err)
	}
	return err
}
