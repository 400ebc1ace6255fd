package accounts

import (
	"context"
	"strings"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// Principal is who a request acts as in a tenant, once authorized.
type Principal struct {
	// Actor is what the audit trail records: "user:<id>" or "api_key:<id>".
	Actor tenancy.Actor `json:"actor"`
	// Role is the user's role in the tenant, or the API key's.
	Role Role `json:"role"`
	// UserID is set for a user, KeyID for an API key.
	UserID uuid.UUID `json:"user_id,omitzero"`
	KeyID  uuid.UUID `json:"key_id,omitzero"`
}

// Authorize checks a credential — a login token or an API key secret — for
// a tenant, and returns who acts. It is meant to run on every request:
//
//   - no credential, a bad signature, an expired token, an unknown or revoked
//     key: CodeUnauthorized;
//   - a valid token of a user who is not a member of the tenant, or an API key
//     of another tenant: CodeForbidden.
func (a *Accounts) Authorize(ctx context.Context, tenant uuid.UUID, credential string) (*Principal, error) {
	switch {
	case credential == "":
		return nil, tenancy.Errorf(tenancy.CodeUnauthorized, "log in first: send Authorization: Bearer <token or API key>")
	case strings.HasPrefix(credential, keyPrefix):
		k, err := a.VerifyAPIKey(ctx, credential)
		if err != nil {
			return nil, err
		}
		if k.TenantID != tenant {
			return nil, tenancy.Errorf(tenancy.CodeForbidden, "this API key belongs to another tenant")
		}
		return &Principal{Actor: tenancy.Actor{Kind: "api_key", ID: k.ID.String()}, Role: k.Role, KeyID: k.ID}, nil
	}
	user, err := a.VerifyToken(credential)
	if err != nil {
		return nil, err
	}
	role, err := a.Role(ctx, tenant, user)
	if err != nil {
		return nil, err
	}
	return &Principal{Actor: tenancy.Actor{Kind: "user", ID: user.String()}, Role: role, UserID: user}, nil
}

// BearerToken returns the credential of an Authorization header value
// ("Bearer <credential>"), or "".
func BearerToken(header string) string {
	scheme, cred, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(cred)
}
