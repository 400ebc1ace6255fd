// Package httpx is the net/http face of tenancy: middleware that resolves the
// tenant of each request into its context, and errors answered as RFC 9457
// problem details (application/problem+json).
//
// Middleware finds a tenant slug in the request through its Sources (a header,
// the subdomain, or a path prefix, tried in order), validates it with
// tenancy.ValidateSlug, looks it up with a Resolver (the catalog's cache), and
// serves only tenants whose status is servable. It also puts the request id
// and the client (IP and User-Agent) into the context, for logs and the audit
// trail. Handlers read all of it with the root package's functions, such as
// tenancy.TenantFromContext, and answer errors with WriteError, which maps
// each tenancy error code to one HTTP status.
//
// Limit, chained after Middleware, applies each tenant's request limit with a
// ratelimit.Limiter: 429 with Retry-After and the IETF RateLimit headers.
//
// The package builds no SQL and opens no database: it only carries the tenant
// from the request to the layers below.
package httpx
