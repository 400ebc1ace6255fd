package router

import (
	"context"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
)

// tracerName names the router's OpenTelemetry instrumentation.
const tracerName = "github.com/tenancyhq/tenancy/router"

// startTx opens the span of a tenant transaction, carrying the tenant's slug,
// tier, model and server (never its id or anything the transaction reads).
func (r *Router) startTx(ctx context.Context, t *tenancy.Tenant) (context.Context, trace.Span) {
	return r.tracer.Start(ctx, "tenancy.tx", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("tenancy.tenant.slug", t.Slug),
		attribute.String("tenancy.tenant.tier", string(t.Tier)),
		attribute.String("tenancy.tenant.model", string(t.Model)),
		attribute.String("tenancy.server", t.Placement.Server),
		attribute.String("db.system", "postgresql"),
	))
}

// endSpan ends span, marking it failed when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, string(tenancy.ErrorCode(err)))
	}
	span.End()
}

// queryTracer gives each statement a span under the caller's context: its
// SQL text, never its arguments.
type queryTracer struct{ tracer trace.Tracer }

var _ pgx.QueryTracer = queryTracer{}

func (q queryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	ctx, _ = q.tracer.Start(ctx, "pgx.query", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("db.system", "postgresql"),
		attribute.String("db.statement", d.SQL),
	))
	return ctx
}

func (q queryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	endSpan(trace.SpanFromContext(ctx), d.Err)
}

var _ pgx.BatchTracer = queryTracer{}

// TraceBatchStart gives a pipeline (the prelude with a transaction's first
// statement, or a batch) one span, with an event per statement.
func (q queryTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	ctx, _ = q.tracer.Start(ctx, "pgx.batch", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("db.system", "postgresql"),
		attribute.Int("db.batch.size", d.Batch.Len()),
	))
	return ctx
}

func (q queryTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	span := trace.SpanFromContext(ctx)
	span.AddEvent("statement", trace.WithAttributes(attribute.String("db.statement", d.SQL)))
	if d.Err != nil {
		span.RecordError(d.Err)
	}
}

func (q queryTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchEndData) {
	endSpan(trace.SpanFromContext(ctx), d.Err)
}
