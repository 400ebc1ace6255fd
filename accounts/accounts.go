package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
)

// Config configures Accounts.
type Config struct {
	// Catalog holds the accounts (catalog migration 006). Required.
	Catalog *catalog.Catalog
	// TokenTTL is how long a login token is valid. Default 12 hours.
	TokenTTL time.Duration
	// Now returns the current time; default time.Now. Tests set it.
	Now func() time.Time
}

// Accounts reads and writes users, memberships and API keys. It is safe for
// concurrent use.
type Accounts struct {
	pool *pgxpool.Pool
	key  []byte // signs tokens
	ttl  time.Duration
	now  func() time.Time
}

// tokenKeySetting names the token signing key in catalog.settings.
const tokenKeySetting = "token_key"

// New returns Accounts on the catalog, creating the token signing key on
// first use. The catalog must be migrated (platform.Open does it).
func New(ctx context.Context, cfg Config) (*Accounts, error) {
	if cfg.Catalog == nil {
		return nil, errors.New("accounts: Config.Catalog is required")
	}
	a := &Accounts{pool: cfg.Catalog.Pool(), ttl: cfg.TokenTTL, now: cfg.Now}
	if a.ttl <= 0 {
		a.ttl = 12 * time.Hour
	}
	if a.now == nil {
		a.now = time.Now
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	// Every process of the installation shares the key: the first one
	// creates it, the others read it.
	if _, err := a.pool.Exec(ctx, `INSERT INTO catalog.settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`,
		tokenKeySetting, key); err != nil {
		return nil, fmt.Errorf("accounts: create token key: %w", err)
	}
	if err := a.pool.QueryRow(ctx, `SELECT value FROM catalog.settings WHERE key = $1`, tokenKeySetting).Scan(&a.key); err != nil {
		return nil, fmt.Errorf("accounts: read token key: %w", err)
	}
	return a, nil
}

// Role is what a member may do in a tenant.
type Role string

const (
	// RoleOwner may do everything, including managing members and keys.
	RoleOwner Role = "owner"
	// RoleAdmin may manage API keys and restore deleted records.
	RoleAdmin Role = "admin"
	// RoleMember reads and writes the tenant's data.
	RoleMember Role = "member"
)

var roleRank = map[Role]int{RoleMember: 1, RoleAdmin: 2, RoleOwner: 3}

// ParseRole returns the Role named s, or an error naming the field "role".
func ParseRole(s string) (Role, error) {
	if _, ok := roleRank[Role(s)]; !ok {
		return "", tenancy.FieldErrorf(tenancy.CodeInvalid, "role", "role must be owner, admin or member, got %q", s)
	}
	return Role(s), nil
}

// AtLeast reports whether r includes the rights of min.
func (r Role) AtLeast(min Role) bool { return roleRank[r] >= roleRank[min] && roleRank[r] > 0 }

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// isText reports whether s can be stored as PostgreSQL text: valid UTF-8
// without NUL. Anything else would fail the INSERT as an internal error.
func isText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

func noRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
