package catalog

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
)

// Operator is a named holder of a control API token (see AddOperator). The
// token itself is shown once, when it is made, and stored only as a hash.
type Operator struct {
	Name string `json:"name"`
	// Role is RoleAdmin (everything the control API does) or RoleViewer
	// (reads only).
	Role string `json:"role"`
	// Prefix is the public part of the token, shown in lists to tell
	// tokens apart.
	Prefix     string     `json:"prefix"`
	CreatedAt  time.Time  `json:"created_at"`
	RotatedAt  *time.Time `json:"rotated_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// The roles of operators.
const (
	RoleAdmin  = "admin"
	RoleViewer = "viewer"
)

// The control-plane events of operators.
const (
	EventOperatorAdded   EventKind = "operator_added"
	EventOperatorRotated EventKind = "operator_rotated"
	EventOperatorRevoked EventKind = "operator_revoked"
)

// SharedOperator is the name under which the shared operator token (the one
// `tenancy serve` is given) acts: no named operator may take it.
const SharedOperator = "token"

// operatorTokenPrefix starts every operator token, so that a token pasted in
// the wrong place is recognisable (and secret scanners can find it).
const operatorTokenPrefix = "opk_"

// lastUsedEvery bounds how often a token's last use is written: at most once
// a minute per operator, so that a busy dashboard does not write on every
// request.
const lastUsedEvery = time.Minute

const operatorColumns = `name, role, prefix, created_at, rotated_at, last_used_at, revoked_at`

func scanOperator(row pgx.Row) (*Operator, error) {
	var o Operator
	err := row.Scan(&o.Name, &o.Role, &o.Prefix, &o.CreatedAt, &o.RotatedAt, &o.LastUsedAt, &o.RevokedAt)
	return &o, err
}

// newOperatorToken returns a new token, its prefix and the hash of its secret.
func newOperatorToken() (token, prefix string, hash []byte) {
	prefix = strings.ToLower(rand.Text()[:12])
	secret := rand.Text()
	sum := sha256.Sum256([]byte(secret))
	return operatorTokenPrefix + prefix + "_" + secret, prefix, sum[:]
}

// AddOperator records a named operator with a role (RoleAdmin or
// RoleViewer) and returns it with its token, which is shown only now. The
// name must be a slug and unused (a revoked operator's name stays taken).
// The operator and client IP of ctx are recorded in the control-plane log.
func (c *Catalog) AddOperator(ctx context.Context, name, role string) (*Operator, string, error) {
	if err := tenancy.ValidateName("operator name", name); err != nil {
		return nil, "", err
	}
	if role != RoleAdmin && role != RoleViewer {
		return nil, "", tenancy.FieldErrorf(tenancy.CodeInvalid, "role", "an operator's role is admin or viewer, not %q", role)
	}
	if name == SharedOperator {
		return nil, "", tenancy.Errorf(tenancy.CodeInvalid, "operator name %q is the shared operator token's: choose another", name)
	}
	token, prefix, hash := newOperatorToken()
	var o *Operator
	err := c.Tx(ctx, func(tx pgx.Tx) error {
		var err error
		o, err = scanOperator(tx.QueryRow(ctx, `INSERT INTO catalog.operators (name, role, prefix, hash) VALUES ($1, $2, $3, $4)
			RETURNING `+operatorColumns, name, role, prefix, hash))
		if isUniqueViolation(err) {
			return tenancy.Errorf(tenancy.CodeConflict, "operator %q already exists (rotate its token instead)", name)
		}
		if err != nil {
			return dbError("add operator %q: %w", name, err)
		}
		return RecordEventTx(ctx, tx, &Event{Kind: EventOperatorAdded}, map[string]string{"name": name, "role": role, "prefix": prefix})
	})
	if err != nil {
		return nil, "", err
	}
	return o, token, nil
}

// RotateOperator gives an operator a new token, returned only now; the old
// one stops working at once. A revoked operator is active again.
func (c *Catalog) RotateOperator(ctx context.Context, name string) (*Operator, string, error) {
	if err := tenancy.ValidateName("operator name", name); err != nil {
		return nil, "", err
	}
	token, prefix, hash := newOperatorToken()
	var o *Operator
	err := c.Tx(ctx, func(tx pgx.Tx) error {
		var err error
		o, err = scanOperator(tx.QueryRow(ctx, `UPDATE catalog.operators SET prefix = $2, hash = $3, rotated_at = now(), revoked_at = NULL
			WHERE name = $1 RETURNING `+operatorColumns, name, prefix, hash))
		if errors.Is(err, pgx.ErrNoRows) {
			return tenancy.Errorf(tenancy.CodeNotFound, "operator %q not found", name)
		}
		if err != nil {
			return dbError("rotate the token of operator %q: %w", name, err)
		}
		return RecordEventTx(ctx, tx, &Event{Kind: EventOperatorRotated}, map[string]string{"name": name, "prefix": prefix})
	})
	if err != nil {
		return nil, "", err
	}
	return o, token, nil
}

// RevokeOperator stops an operator's token from working, at once. Revoking
// a revoked operator fails with CodeConflict.
func (c *Catalog) RevokeOperator(ctx context.Context, name string) (*Operator, error) {
	if err := tenancy.ValidateName("operator name", name); err != nil {
		return nil, err
	}
	var o *Operator
	err := c.Tx(ctx, func(tx pgx.Tx) error {
		var err error
		o, err = scanOperator(tx.QueryRow(ctx, `SELECT `+operatorColumns+` FROM catalog.operators WHERE name = $1 FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return tenancy.Errorf(tenancy.CodeNotFound, "operator %q not found", name)
		}
		if err != nil {
			return dbError("read operator %q: %w", name, err)
		}
		if o.RevokedAt != nil {
			return tenancy.Errorf(tenancy.CodeConflict, "operator %q was already revoked", name)
		}
		if err := tx.QueryRow(ctx, `UPDATE catalog.operators SET revoked_at = now() WHERE name = $1 RETURNING revoked_at`, name).Scan(&o.RevokedAt); err != nil {
			return dbError("revoke operator %q: %w", name, err)
		}
		return RecordEventTx(ctx, tx, &Event{Kind: EventOperatorRevoked}, map[string]string{"name": name})
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Operators returns every operator, revoked ones included, by name.
func (c *Catalog) Operators(ctx context.Context) ([]*Operator, error) {
	rows, err := c.pool.Query(ctx, `SELECT `+operatorColumns+` FROM catalog.operators ORDER BY name`)
	if err != nil {
		return nil, dbError("list operators: %w", err)
	}
	ops, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Operator, error) { return scanOperator(r) })
	if err != nil {
		return nil, dbError("list operators: %w", err)
	}
	return ops, nil
}

// IsOperatorToken reports whether token has the form of an operator token
// (not whether it is valid).
func IsOperatorToken(token string) bool { return strings.HasPrefix(token, operatorTokenPrefix) }

// OperatorByToken returns the operator whose token this is. It fails with
// CodeUnauthorized when the token is malformed, unknown or revoked (one
// message for all, so that it tells nothing), and CodeUnavailable when the
// catalog cannot be reached. The secret is compared in constant time.
func (c *Catalog) OperatorByToken(ctx context.Context, token string) (*Operator, error) {
	refused := tenancy.Errorf(tenancy.CodeUnauthorized, "unknown or revoked operator token")
	rest, ok := strings.CutPrefix(token, operatorTokenPrefix)
	prefix, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || prefix == "" || secret == "" || len(token) > 200 {
		return nil, refused
	}
	var hash []byte
	o := &Operator{}
	err := c.pool.QueryRow(ctx, `SELECT `+operatorColumns+`, hash FROM catalog.operators WHERE prefix = $1`, prefix).
		Scan(&o.Name, &o.Role, &o.Prefix, &o.CreatedAt, &o.RotatedAt, &o.LastUsedAt, &o.RevokedAt, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refused
	}
	if err != nil {
		return nil, dbError("look up an operator token: %w", err)
	}
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], hash) != 1 || o.RevokedAt != nil {
		return nil, refused
	}
	if o.LastUsedAt == nil || time.Since(*o.LastUsedAt) > lastUsedEvery {
		// Best effort: a failure to note the use does not refuse the operator.
		_, _ = c.pool.Exec(ctx, `UPDATE catalog.operators SET last_used_at = now() WHERE name = $1`, o.Name)
	}
	return o, nil
}
