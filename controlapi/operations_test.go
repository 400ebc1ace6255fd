package controlapi

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy"
)

// TestOperationsBoundedAndCancelled: at most maxRunning operations run at
// once, and close cancels the running ones and waits for them, which end
// failed with the cancellation.
func TestOperationsBoundedAndCancelled(t *testing.T) {
	t.Parallel()
	o := newOperations(slog.New(slog.DiscardHandler))
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
		op, ok := o.get(id)
		if !ok || op.State != OpFailed || op.Error == nil || op.Error.Status != 503 || op.FinishedAt.IsZero() {
			t.Errorf("after close: %+v", op)
		}
	}
	if _, err := o.start(ctx, "move", "acme", nil); tenancy.ErrorCode(err) != tenancy.CodeUnavailable {
		t.Errorf("start after close: %v, want unavailable", err)
	}
}
