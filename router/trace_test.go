package router_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

// TestTracing: with a TracerProvider, each tenant transaction is a span that
// names the tenant (slug, tier, model, server), and its statements — the
// pipelined first one and the ones after — are its children, whatever context
// the function passes them.
func TestTracing(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	ctx := context.Background()
	key, err := b.Platform.Catalog.TenantKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	r, err := router.New(router.Config{Resolver: b.Platform.Cache, Servers: b.Platform.Catalog, Key: key, AppRole: b.AppRole, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	for _, tn := range b.Tenants {
		rec.Reset()
		err := r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
			if _, err := tx.Exec(context.Background(), `SELECT count(*) FROM contacts WHERE tenant_id = $1`, tn.ID); err != nil {
				return err
			}
			_, err := tx.Exec(context.Background(), `SELECT count(*) FROM deals WHERE tenant_id = $1`, tn.ID)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", tn.Model, err)
		}
		var txSpan sdktrace.ReadOnlySpan
		children := map[string]int{}
		for _, s := range rec.Ended() {
			if s.Name() == "tenancy.tx" {
				txSpan = s
			}
		}
		if txSpan == nil {
			t.Fatalf("%s: no tenancy.tx span among %d", tn.Model, len(rec.Ended()))
		}
		attrs := map[string]string{}
		for _, a := range txSpan.Attributes() {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		if attrs["tenancy.tenant.slug"] != tn.Slug || attrs["tenancy.tenant.model"] != string(tn.Model) || attrs["tenancy.server"] != tn.Placement.Server {
			t.Errorf("%s: the transaction's span carries %v", tn.Model, attrs)
		}
		for _, s := range rec.Ended() {
			if s.Parent().SpanID() == txSpan.SpanContext().SpanID() {
				children[s.Name()]++
			}
		}
		if children["pgx.batch"] < 1 || children["pgx.query"] < 1 {
			t.Errorf("%s: the transaction's children are %v, want the pipelined first statement and the next", tn.Model, children)
		}
	}
}
