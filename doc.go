// Package tenancy is the vocabulary of a multi-tenant SaaS on PostgreSQL: tenants,
// their isolation models and placements, the tenant carried in a context.Context,
// and the error codes every layer shares.
//
// The machinery lives in subpackages, each named for what it does:
//
//   - catalog: the control plane (servers, tenants) in its own database, with a
//     cache that every process invalidates through LISTEN/NOTIFY.
//   - router: runs a function in a transaction on the tenant's data, whatever
//     its isolation model (shared tables under Row-Level Security, a schema per
//     tenant, or a database per tenant).
//   - datamodel: the application's tenant tables, declared as SQL migrations,
//     protected by the library after every migration.
//   - httpx: net/http middleware that resolves the tenant of a request and
//     answers errors as application/problem+json.
//   - platform: opens all of the above from one Config.
//
// A request reads straight down: httpx resolves the tenant into the context,
// the handler calls router.Tx, and the router puts the tenant into
// transaction-local settings that PostgreSQL itself enforces.
package tenancy
