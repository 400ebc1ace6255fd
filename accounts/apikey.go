package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// APIKey is a tenant's key for machines. Its secret is not part of it: it is
// returned once by CreateAPIKey and never stored.
type APIKey struct {
	ID         uuid.UUID  `json:"id"`
	TenantID   uuid.UUID  `json:"tenant_id"`
	Name       string     `json:"name"`
	Role       Role       `json:"role"`
	Prefix     string     `json:"prefix"`
	CreatedBy  *uuid.UUID `json:"created_by,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// keyPrefix starts every API key secret: "tk_" + public prefix + "_" + secret.
const keyPrefix = "tk_"

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// CreateAPIKey creates a key for the tenant with the role (admin or member)
// and returns it with its secret, which is shown this once: only its SHA-256
// hash is stored. createdBy may be uuid.Nil.
func (a *Accounts) CreateAPIKey(ctx context.Context, tenant uuid.UUID, name string, role Role, createdBy uuid.UUID) (*APIKey, string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 || !isText(name) {
		return nil, "", tenancy.FieldErrorf(tenancy.CodeInvalid, "name", "name must be 1 to 100 bytes of valid UTF-8 text")
	}
	if role != RoleAdmin && role != RoleMember {
		return nil, "", tenancy.FieldErrorf(tenancy.CodeInvalid, "role", "an API key's role must be admin or member, got %q", role)
	}
	pub := make([]byte, 6)
	if _, err := rand.Read(pub); err != nil {
		return nil, "", err
	}
	k := &APIKey{ID: uuid.New(), TenantID: tenant, Name: name, Role: role, Prefix: hex.EncodeToString(pub)}
	secret := keyPrefix + k.Prefix + "_" + rand.Text()
	var by *uuid.UUID
	if createdBy != uuid.Nil {
		by = &createdBy
		k.CreatedBy = by
	}
	err := a.pool.QueryRow(ctx, `INSERT INTO catalog.api_keys (id, tenant_id, name, role, prefix, hash, created_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at`,
		k.ID, tenant, name, string(role), k.Prefix, hashSecret(secret), by).Scan(&k.CreatedAt)
	if isForeignKeyViolation(err) {
		return nil, "", tenancy.Errorf(tenancy.CodeNotFound, "no such tenant or user")
	}
	if err != nil {
		return nil, "", fmt.Errorf("create API key: %w", err)
	}
	return k, secret, nil
}

const apiKeyColumns = `id, tenant_id, name, role, prefix, created_by, created_at, last_used_at, revoked_at`

// APIKeys lists a tenant's keys, revoked ones included, newest first.
func (a *Accounts) APIKeys(ctx context.Context, tenant uuid.UUID) ([]APIKey, error) {
	rows, err := a.pool.Query(ctx, `SELECT `+apiKeyColumns+` FROM catalog.api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	defer rows.Close()
	out := []APIKey{}
	for rows.Next() {
		var k APIKey
		if err := rows.Scan(&k.ID, &k.TenantID, &k.Name, &k.Role, &k.Prefix, &k.CreatedBy, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RevokeAPIKey revokes one of the tenant's keys: it stops working at once.
func (a *Accounts) RevokeAPIKey(ctx context.Context, tenant, id uuid.UUID) error {
	tag, err := a.pool.Exec(ctx, `UPDATE catalog.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE tenant_id = $1 AND id = $2`, tenant, id)
	if err != nil {
		return fmt.Errorf("revoke API key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return tenancy.Errorf(tenancy.CodeNotFound, "API key %s not found", id)
	}
	return nil
}

var errBadKey = tenancy.Errorf(tenancy.CodeUnauthorized, "the API key is invalid or revoked")

// VerifyAPIKey returns the key whose secret this is, unless it is revoked.
// The hash is compared in constant time.
func (a *Accounts) VerifyAPIKey(ctx context.Context, secret string) (*APIKey, error) {
	rest, ok := strings.CutPrefix(secret, keyPrefix)
	pub, _, ok2 := strings.Cut(rest, "_")
	// The public part is what CreateAPIKey wrote: 12 lower-case hex digits.
	// Anything else is no key, and must not reach the query (PostgreSQL
	// fails on a NUL or invalid UTF-8, which an Authorization header carries).
	if !ok || !ok2 || len(pub) != 12 || strings.Trim(pub, "0123456789abcdef") != "" || len(secret) > 200 {
		return nil, errBadKey
	}
	var k APIKey
	var hash []byte
	err := a.pool.QueryRow(ctx, `SELECT `+apiKeyColumns+`, hash FROM catalog.api_keys WHERE prefix = $1`, pub).
		Scan(&k.ID, &k.TenantID, &k.Name, &k.Role, &k.Prefix, &k.CreatedBy, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt, &hash)
	if noRows(err) {
		return nil, errBadKey
	}
	if err != nil {
		return nil, fmt.Errorf("read API key: %w", err)
	}
	if subtle.ConstantTimeCompare(hash, hashSecret(secret)) != 1 || k.RevokedAt != nil {
		return nil, errBadKey
	}
	// Best effort, at most once a minute per key: a failure here must not
	// refuse the request.
	_, _ = a.pool.Exec(ctx, `UPDATE catalog.api_keys SET last_used_at = now()
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, k.ID)
	return &k, nil
}
