package serve_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/serve"
)

// TestTracing: a tenant's request is traced in a server span that carries
// the tenant's slug, tier and model, and the application's spans are its
// children; a request that names no tenant carries none.
func TestTracing(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	tn := b.CreateTenant(t, tenancy.ModelSchema, b.ServerNames[0])
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := tp.Tracer("app").Start(r.Context(), "app work")
		span.End()
	})
	s, err := serve.New(serve.Config{Platform: b.Platform, App: app, OperatorToken: token, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	for _, path := range []string{"/t/" + tn.Slug + "/contacts", "/healthz"} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	spans := rec.Ended()
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, sp := range spans {
		byName[sp.Name()] = sp
	}
	req, work, health := byName["GET app"], byName["app work"], byName["GET ops"]
	if req == nil || work == nil || health == nil {
		t.Fatalf("spans: %v", names(spans))
	}
	if req.SpanKind() != trace.SpanKindServer || work.Parent().SpanID() != req.SpanContext().SpanID() {
		t.Errorf("the application's span is not the request span's child")
	}
	attrs := attribute.NewSet(req.Attributes()...)
	for key, want := range map[attribute.Key]string{
		serve.AttrTenantSlug: tn.Slug, serve.AttrTenantTier: string(tn.Tier), serve.AttrTenantModel: "schema",
	} {
		if v, ok := attrs.Value(key); !ok || v.AsString() != want {
			t.Errorf("request span's %s = %q, want %q", key, v.AsString(), want)
		}
	}
	if hattrs := attribute.NewSet(health.Attributes()...); hattrs.HasValue(serve.AttrTenantSlug) {
		t.Errorf("a request naming no tenant has a tenant attribute")
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, sp := range spans {
		out[i] = sp.Name()
	}
	return out
}
