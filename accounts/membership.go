package accounts

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// Membership is a user's role in a tenant.
type Membership struct {
	TenantID   uuid.UUID `json:"tenant_id"`
	TenantSlug string    `json:"tenant"`
	TenantName string    `json:"tenant_name"`
	UserID     uuid.UUID `json:"user_id"`
	Email      string    `json:"email"`
	Role       Role      `json:"role"`
	CreatedAt  time.Time `json:"created_at"`
}

// SetMembership makes the user a member of the tenant with the role, or
// changes their role.
func (a *Accounts) SetMembership(ctx context.Context, tenant, user uuid.UUID, role Role) error {
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	_, err := a.pool.Exec(ctx, `INSERT INTO catalog.memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)
		ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role`, tenant, user, string(role))
	if isForeignKeyViolation(err) {
		return tenancy.Errorf(tenancy.CodeNotFound, "no such tenant or user")
	}
	if err != nil {
		return fmt.Errorf("set membership: %w", err)
	}
	return nil
}

// RemoveMembership removes the user from the tenant. Removing a membership
// that does not exist is not an error.
func (a *Accounts) RemoveMembership(ctx context.Context, tenant, user uuid.UUID) error {
	if _, err := a.pool.Exec(ctx, `DELETE FROM catalog.memberships WHERE tenant_id = $1 AND user_id = $2`, tenant, user); err != nil {
		return fmt.Errorf("remove membership: %w", err)
	}
	return nil
}

// Role returns the user's role in the tenant, or an error with CodeForbidden
// when the user is not a member (or the account is disabled).
func (a *Accounts) Role(ctx context.Context, tenant, user uuid.UUID) (Role, error) {
	var role Role
	err := a.pool.QueryRow(ctx, `SELECT m.role FROM catalog.memberships m JOIN catalog.users u ON u.id = m.user_id
		WHERE m.tenant_id = $1 AND m.user_id = $2 AND u.disabled_at IS NULL`, tenant, user).Scan(&role)
	if noRows(err) {
		return "", tenancy.Errorf(tenancy.CodeForbidden, "you are not a member of this tenant")
	}
	if err != nil {
		return "", fmt.Errorf("read membership: %w", err)
	}
	return role, nil
}

// Memberships lists the tenants a user is a member of, by slug.
func (a *Accounts) Memberships(ctx context.Context, user uuid.UUID) ([]Membership, error) {
	return a.memberships(ctx, `m.user_id = $1`, user)
}

// Members lists the members of a tenant, by email.
func (a *Accounts) Members(ctx context.Context, tenant uuid.UUID) ([]Membership, error) {
	return a.memberships(ctx, `m.tenant_id = $1`, tenant)
}

func (a *Accounts) memberships(ctx context.Context, where string, id uuid.UUID) ([]Membership, error) {
	rows, err := a.pool.Query(ctx, `SELECT m.tenant_id, t.slug, t.name, m.user_id, u.email, m.role, m.created_at
		FROM catalog.memberships m JOIN catalog.tenants t ON t.id = m.tenant_id JOIN catalog.users u ON u.id = m.user_id
		WHERE `+where+` AND u.disabled_at IS NULL ORDER BY t.slug, u.email`, id)
	if err != nil {
		return nil, fmt.Errorf("list memberships: %w", err)
	}
	defer rows.Close()
	out := []Membership{}
	for rows.Next() {
		var m Membership
		if err := rows.Scan(&m.TenantID, &m.TenantSlug, &m.TenantName, &m.UserID, &m.Email, &m.Role, &m.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
