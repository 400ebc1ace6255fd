package serve

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// The span attributes that carry the tenant (never a secret: no id, no
// placement's credentials).
const (
	AttrTenantSlug  = attribute.Key("tenancy.tenant.slug")
	AttrTenantTier  = attribute.Key("tenancy.tenant.tier")
	AttrTenantModel = attribute.Key("tenancy.tenant.model")
)

// traced wraps h in a server span per request, from the configured
// TracerProvider (none: h itself). The span is named by method and area
// (for example "GET app"), never by path, which holds tenant slugs and ids.
func (s *Server) traced(h http.Handler) http.Handler {
	if s.cfg.TracerProvider == nil {
		return h
	}
	return otelhttp.NewHandler(h, "http",
		otelhttp.WithTracerProvider(s.cfg.TracerProvider),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + areaOf(r.URL.Path) }))
}

// tagTenant puts the tenant of a /t/{slug}/… request on the request's span,
// with its tier and model as the catalog's cache knows them.
func (s *Server) tagTenant(r *http.Request, slug string) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(AttrTenantSlug.String(slug))
	if t, err := s.cfg.Platform.Cache.ResolveSlug(r.Context(), slug); err == nil {
		span.SetAttributes(AttrTenantTier.String(string(t.Tier)), AttrTenantModel.String(string(t.Model)))
	}
}
