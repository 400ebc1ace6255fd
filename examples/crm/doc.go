// Package crm is the example SaaS built only on tenancy's public API: a small
// CRM of companies, contacts, deals and notes, as a JSON REST API, with one
// login across tenants. It is the reference to copy.
//
// Routes (all JSON; errors are application/problem+json naming the field):
//
//	POST /signup                      create an account {email, name, password}
//	POST /login                       {email, password} → {token, expires_at, user, tenants}
//	GET  /me                          the account and its memberships (Bearer token)
//
//	/t/{tenant}/…                     a tenant's data; Authorization: Bearer <token or API key>
//	  GET    /contacts                list: ?q= ?email= ?company_id= ?deleted=include|only ?limit= ?cursor=
//	  POST   /contacts                create
//	  GET    /contacts/{id}           get
//	  PATCH  /contacts/{id}           update the fields given
//	  DELETE /contacts/{id}           soft delete
//	  POST   /contacts/{id}/restore   undelete (admin)
//	  … the same for /companies, /deals and /notes
//	  POST   /contacts/import         CSV (name,email[,phone]) imported by a background job
//	  GET    /jobs/{id}               the state of one of the tenant's jobs
//	  GET    /audit                   the tenant's audit log (admin)
//	  GET|POST /api-keys, DELETE /api-keys/{id}   keys for machines (admin)
//	  GET|PUT  /members               members and their roles (PUT: owner or admin)
//
// The tenant comes from the path (httpx), its plan's request limit applies
// when the platform enforces limits (platform.Config.Limits), who acts from
// the token or API key
// (accounts.Authorize, on every request), and both reach PostgreSQL through
// the router, where the audit triggers record the actor, client IP, user
// agent and request id of every change.
package crm
