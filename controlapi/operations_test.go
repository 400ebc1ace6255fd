package controlapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// TestOperationsBoundedAndCancelled: at most maxRunning operations run at
// once, and close cancels the running ones and waits for them, which end
// failed with the cancellation.
func TestOperationsBoundedAndCancelled(t *testing.T) {
	t.Parallel()
	o := newOperations(slog.New(slog.DiscardHandler), nil)
	ctx := tenancy.WithRequestID(context.Background(), "req-1")
	ids := make([]string, 0, maxRunning)
	for range maxRunning {
		op, err := o.start(ctx, "move", "acme", func(ctx context.Context, report progress) (any, error) {
			if tenancy.RequestIDFromContext(ctx) != "req-1" {
				return nil, tenancy.Errorf(tenancy.CodeInvalid, "the request's values are lost")
			}
			report("copy", 10)
			<-ctx.Done()
			return nil, tenancy.Errorf(tenancy.CodeUnavailable, "cancelled: %w", ctx.Err())
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, op.ID)
	}
	if _, err := o.start(ctx, "move", "acme", nil); tenancy.ErrorCode(err) != tenancy.CodeUnavailable {
		t.Fatalf("one operation too many: %v, want unavailable", err)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.close(cctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		op, err := o.get(ctx, id)
		if err != nil || op.State != OpFailed || op.Error == nil || op.Error.Status != 503 || op.FinishedAt.IsZero() {
			t.Errorf("after close: %+v", op)
		}
	}
	if _, err := o.start(ctx, "move", "acme", nil); tenancy.ErrorCode(err) != tenancy.CodeUnavailable {
		t.Errorf("start after close: %v, want unavailable", err)
	}
}

// TestOperationFailureIsRecorded: an operation that fails in the background is
// handed to the recorder of the control-plane log, with the request's values,
// even though nobody polls it; one that succeeds is not.
func TestOperationFailureIsRecorded(t *testing.T) {
	t.Parallel()
	o := newOperations(slog.New(slog.DiscardHandler), nil)
	type failure struct{ kind, slug, requestID, err string }
	got := make(chan failure, 2)
	o.failed = func(ctx context.Context, kind, slug string, err error) {
		got <- failure{kind, slug, tenancy.RequestIDFromContext(ctx), err.Error()}
	}
	ctx := tenancy.WithRequestID(context.Background(), "req-2")
	if _, err := o.start(ctx, "move", "acme", func(context.Context, progress) (any, error) { return "done", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := o.start(ctx, "move", "globex", func(context.Context, progress) (any, error) {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "the destination is taken")
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-got:
		if f != (failure{"move", "globex", "req-2", "the destination is taken"}) {
			t.Errorf("recorded %+v", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the failed operation was not recorded")
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.close(cctx); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-got:
		t.Errorf("a successful operation was recorded as failed: %+v", f)
	default:
	}
}

// TestRecordFailure: the recorder writes the failure to the control-plane log
// with the tenant, the operator of the request, and the error's public detail.
func TestRecordFailure(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1})
	tn := b.Tenants[0]
	a, err := New(Config{Platform: b.Platform, Token: "record-failure-token"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ops.failed == nil {
		t.Error("the API's operations do not record their failures")
	}
	ctx := tenancy.WithActor(context.Background(), tenancy.Actor{Kind: "operator", ID: "ops-1"})
	a.recordFailure(ctx, "move", tn.Slug, tenancy.Errorf(tenancy.CodeConflict, "the destination is taken"))
	events, _, err := b.Platform.Catalog.Events(context.Background(), &catalog.EventOpts{Kind: catalog.EventOperationFailed})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("%d operation_failed events, want 1", len(events))
	}
	var details map[string]string
	if err := json.Unmarshal(events[0].Details, &details); err != nil {
		t.Fatal(err)
	}
	if events[0].TenantID != tn.ID || events[0].Operator != "operator:ops-1" || details["operation"] != "move" ||
		details["code"] != "conflict" || details["detail"] != "the destination is taken" {
		t.Errorf("event: %+v, details %v", events[0], details)
	}
}

// TestOperationHeartbeat: a running operation is saved in the catalog when
// it reports a new step and at every heartbeat, so that other nodes see its
// progress and do not take it for interrupted; its end is saved too.
func TestOperationHeartbeat(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	cat := b.Platform.Catalog
	o := newOperations(slog.New(slog.DiscardHandler), cat)
	o.beat = 20 * time.Millisecond
	ctx := context.Background()
	release := make(chan struct{})
	op, err := o.start(ctx, "move", "acme", func(ctx context.Context, report progress) (any, error) {
		report("copy", 42)
		<-release
		return "moved", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	saved := func(until func(*catalog.APIOperation, OpResource) bool) (*catalog.APIOperation, OpResource) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			rec, err := cat.APIOperationByID(ctx, op.ID)
			if err != nil {
				t.Fatal(err)
			}
			var doc OpResource
			if err := json.Unmarshal(rec.Doc, &doc); err != nil {
				t.Fatal(err)
			}
			if until(rec, doc) {
				return rec, doc
			}
			if time.Now().After(deadline) {
				t.Fatalf("the catalog has %+v %s", rec, rec.Doc)
			}
		}
	}
	first, _ := saved(func(_ *catalog.APIOperation, doc OpResource) bool { return doc.Step == "copy" && doc.Rows == 42 })
	saved(func(rec *catalog.APIOperation, _ OpResource) bool {
		return rec.HeartbeatAt.After(first.HeartbeatAt) && rec.Running
	})
	close(release)
	saved(func(rec *catalog.APIOperation, doc OpResource) bool {
		return !rec.Running && doc.State == OpSucceeded && doc.Result == "moved"
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := o.close(cctx); err != nil {
		t.Fatal(err)
	}
}
