// Package accounts is the one login of a tenancy installation: users with one
// account each, their memberships in tenants with a role (owner, admin or
// member), and per-tenant API keys for machines. It lives in the catalog
// database, beside the tenants it refers to.
//
// A user logs in with an email and a password (hashed with argon2id) and gets
// a signed token (HMAC-SHA256 with a key kept in the catalog). The token says
// who the user is, not what they may do: Authorize checks, on every request,
// that the user is a member of the tenant being served, and returns the actor
// (tenancy.Actor) that the audit trail records. An API key belongs to one
// tenant; its secret is shown once, when it is created, and only its SHA-256
// hash is stored.
//
//	acc, err := accounts.New(ctx, accounts.Config{Catalog: p.Catalog})
//	u, err := acc.CreateUser(ctx, &accounts.NewUser{Email: "ada@example.com", Password: "…"})
//	err = acc.SetMembership(ctx, tenant.ID, u.ID, accounts.RoleOwner)
//	tok, err := acc.Login(ctx, "ada@example.com", "…")
//	…
//	pr, err := acc.Authorize(ctx, tenant.ID, bearer) // CodeUnauthorized, CodeForbidden
//	ctx = tenancy.WithActor(ctx, pr.Actor)
package accounts
