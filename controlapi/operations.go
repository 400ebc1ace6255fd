package controlapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/httpx"
)

// The states of an OpResource.
const (
	OpRunning   = "running"
	OpSucceeded = "succeeded"
	OpFailed    = "failed"
)

// OpResource is a long operation (a move or a purge) that the API runs in the
// background: POST /v1/tenants/{slug}/move (or …/purge) answers 202 with it,
// and clients poll GET /v1/operations/{id} until its state is no longer
// "running".
//
// The resource lives in the memory of the process that runs the operation;
// the operation's durable record is the catalog's (a move's state machine in
// catalog.moves, a purge's steps in catalog.operations), which survives the
// process: an interrupted move is finished or rolled back, an interrupted
// purge finished, by posting it again.
type OpResource struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`   // the verb, for example "move"
	Tenant string `json:"tenant"` // the tenant's slug
	// State is OpRunning, OpSucceeded or OpFailed.
	State string `json:"state"`
	// Step is the last step the operation reported, for example "copied".
	Step string `json:"step,omitempty"`
	// Rows counts the rows copied so far, for a move.
	Rows int64 `json:"rows"`
	// Error is the failure, as the problem the API would have answered.
	Error *httpx.Problem `json:"error,omitempty"`
	// Result is the operation's result once it succeeded: a move.Result, or
	// the purged tenant's tombstone.
	Result     any       `json:"result,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// maxRunning bounds the operations running at once in one process; more are
// refused with 503 until one ends. maxKept bounds the finished operations
// kept for polling: the oldest are forgotten first.
const (
	maxRunning = 4
	maxKept    = 200
)

// operations runs long operations in the background and keeps their
// resources for polling.
type operations struct {
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	logger *slog.Logger
	// failed, when set, records an operation that failed in the background
	// (the control-plane log), with the values of the request that started it.
	failed func(ctx context.Context, kind, slug string, err error)

	mu      sync.Mutex
	byID    map[string]*OpResource
	order   []string // ids, oldest first
	running int
}

func newOperations(logger *slog.Logger) *operations {
	ctx, cancel := context.WithCancel(context.Background())
	return &operations{ctx: ctx, cancel: cancel, logger: logger, byID: map[string]*OpResource{}}
}

// progress is how a running operation reports its advance.
type progress func(step string, rows int64)

// start runs fn in the background under a context that keeps ctx's values
// (actor, client, request id: what the catalog's events record) but is
// cancelled only by close. It returns the operation's resource as it is now.
func (o *operations) start(ctx context.Context, kind, slug string, fn func(context.Context, progress) (any, error)) (OpResource, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	now := time.Now().UTC()
	op := &OpResource{ID: "op-" + hex.EncodeToString(b[:]), Kind: kind, Tenant: slug, State: OpRunning, CreatedAt: now, UpdatedAt: now}

	o.mu.Lock()
	if o.ctx.Err() != nil {
		o.mu.Unlock()
		return OpResource{}, tenancy.Errorf(tenancy.CodeUnavailable, "the server is shutting down")
	}
	if o.running >= maxRunning {
		o.mu.Unlock()
		return OpResource{}, tenancy.Errorf(tenancy.CodeUnavailable, "%d operations are running already; try again when one is done", maxRunning)
	}
	o.running++
	o.byID[op.ID] = op
	o.order = append(o.order, op.ID)
	o.forget()
	snap := *op
	o.wg.Add(1)
	o.mu.Unlock()

	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(o.ctx, cancel)
	go func() {
		defer o.wg.Done()
		defer cancel()
		defer stop()
		out, err := fn(octx, func(step string, rows int64) {
			o.mu.Lock()
			defer o.mu.Unlock()
			op.Step, op.Rows, op.UpdatedAt = step, rows, time.Now().UTC()
		})
		if err != nil && o.failed != nil {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(octx), 10*time.Second)
			o.failed(rctx, kind, slug, err)
			rcancel()
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		o.running--
		op.UpdatedAt = time.Now().UTC()
		op.FinishedAt = op.UpdatedAt
		if err != nil {
			op.State = OpFailed
			p := problemOf(err)
			op.Error = &p
			o.logger.LogAttrs(octx, slog.LevelWarn, "operation failed", slog.String("operation", op.ID),
				slog.String("kind", kind), slog.String("tenant", slug), slog.Any("error", err))
			return
		}
		op.State, op.Result = OpSucceeded, out
	}()
	return snap, nil
}

// forget drops the oldest finished operations beyond maxKept. o.mu is held.
func (o *operations) forget() {
	for i := 0; len(o.order) > maxKept && i < len(o.order); {
		if op := o.byID[o.order[i]]; op.State != OpRunning {
			delete(o.byID, op.ID)
			o.order = slices.Delete(o.order, i, i+1)
			continue
		}
		i++
	}
}

func (o *operations) get(id string) (OpResource, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	op, ok := o.byID[id]
	if !ok {
		return OpResource{}, false
	}
	return *op, true
}

func (o *operations) list() []OpResource {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]OpResource, 0, len(o.order))
	for i := len(o.order) - 1; i >= 0; i-- {
		out = append(out, *o.byID[o.order[i]])
	}
	return out
}

// close cancels the running operations and waits for them to return, or for
// ctx to be done.
func (o *operations) close(ctx context.Context) error {
	o.mu.Lock()
	o.cancel()
	o.mu.Unlock()
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("controlapi: operations still running at shutdown")
	}
}

// problemOf is the problem the API would answer for err: its code, status,
// message and field; for an internal error only "internal error".
func problemOf(err error) httpx.Problem {
	p := httpx.Problem{Type: "about:blank", Code: tenancy.CodeInternal, Detail: "internal error"}
	var te *tenancy.Error
	if errors.As(err, &te) && httpx.StatusCode(te.Code) != http.StatusInternalServerError {
		p.Code, p.Detail, p.Field = te.Code, te.Error(), te.Field
	}
	p.Status = httpx.StatusCode(p.Code)
	p.Title = http.StatusText(p.Status)
	return p
}

// Close cancels the operations running in the background (an interrupted
// move is finished or rolled back when it is posted again) and waits for
// them to return, at most until ctx is done.
func (a *API) Close(ctx context.Context) error { return a.ops.close(ctx) }

func (a *API) showOperation(w http.ResponseWriter, r *http.Request) (int, any, error) {
	op, ok := a.ops.get(r.PathValue("id"))
	if !ok {
		return 0, nil, tenancy.Errorf(tenancy.CodeNotFound, "no operation %q in this process", r.PathValue("id"))
	}
	return http.StatusOK, op, nil
}

func (a *API) listOperations(w http.ResponseWriter, r *http.Request) (int, any, error) {
	return http.StatusOK, map[string]any{"items": a.ops.list()}, nil
}
