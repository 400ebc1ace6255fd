package tenancy

import (
	"context"

	"github.com/google/uuid"
)

type ctxKey int

const (
	tenantKey ctxKey = iota
	actorKey
	requestIDKey
	clientKey
)

// WithTenant returns a context that carries the tenant. Every layer below reads
// it from there: the router refuses to run SQL without it.
func WithTenant(ctx context.Context, t *Tenant) context.Context {
	return context.WithValue(ctx, tenantKey, t)
}

// TenantFromContext returns the tenant carried by ctx, if any.
func TenantFromContext(ctx context.Context) (*Tenant, bool) {
	t, ok := ctx.Value(tenantKey).(*Tenant)
	return t, ok && t != nil && t.ID != uuid.Nil
}

// Actor is who acts: a user or an API key. Its ID lands in the audit trail.
type Actor struct {
	// Kind is "user", "api_key", "operator" or "system".
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// String formats the actor as kind:id.
func (a Actor) String() string {
	if a.Kind == "" && a.ID == "" {
		return ""
	}
	return a.Kind + ":" + a.ID
}

// WithActor returns a context that carries the actor of the current work.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey, a)
}

// ActorFromContext returns the actor carried by ctx, if any.
func ActorFromContext(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey).(Actor)
	return a, ok
}

// WithRequestID returns a context that carries the id of the request being served.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

// RequestIDFromContext returns the request id carried by ctx, or "".
func RequestIDFromContext(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// Client describes where a request came from, for the audit trail.
type Client struct {
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent"`
}

// WithClient returns a context that carries the client of the current request.
func WithClient(ctx context.Context, c Client) context.Context {
	return context.WithValue(ctx, clientKey, c)
}

// ClientFromContext returns the client carried by ctx, if any.
func ClientFromContext(ctx context.Context) (Client, bool) {
	c, ok := ctx.Value(clientKey).(Client)
	return c, ok
}
