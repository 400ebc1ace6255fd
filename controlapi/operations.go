package controlapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
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
// The resource is saved in the catalog (catalog.APIOperation) when the
// operation starts, at each new step, every few seconds while it runs, and
// when it ends, so every node of the installation answers for it, also after
// the node that ran it is gone; one whose node stopped saving it for 30 s
// shows failed, interrupted. The operation's own durable record is the
// catalog's too (a move's state machine in catalog.moves, a purge's steps in
// catalog.operations): an interrupted move is finished or rolled back, an
// interrupted purge finished, by posting it again.
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

// Operations are saved in the catalog (see opStore) when they start, when
// they report a new step, every heartbeatEvery while they run, and when they
// end. One saved as running that has not been saved for staleAfter was
// interrupted with its node.
const (
	heartbeatEvery = 5 * time.Second
	staleAfter     = 30 * time.Second
)

// opStore keeps operation resources where every node of the installation
// can read them: the catalog (*catalog.Catalog).
type opStore interface {
	SaveAPIOperation(ctx context.Context, op *catalog.APIOperation) error
	APIOperationByID(ctx context.Context, id string) (*catalog.APIOperation, error)
	APIOperations(ctx context.Context, limit int) ([]*catalog.APIOperation, error)
}

// operations runs long operations in the background and keeps their
// resources for polling: in memory, and in the store when there is one, so
// that any node answers for any operation, also after the node that ran it
// is gone.
type operations struct {
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	logger *slog.Logger
	// failed, when set, records an operation that failed in the background
	// (the control-plane log), with the values of the request that started it.
	failed func(ctx context.Context, kind, slug string, err error)
	store  opStore       // nil: this process's memory only
	node   string        // this process, in the store
	beat   time.Duration // heartbeatEvery, shorter in tests

	mu      sync.Mutex
	byID    map[string]*OpResource
	order   []string // ids, oldest first
	running int
}

func newOperations(logger *slog.Logger, store opStore) *operations {
	ctx, cancel := context.WithCancel(context.Background())
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	node := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	return &operations{ctx: ctx, cancel: cancel, logger: logger, store: store, node: node, beat: heartbeatEvery, byID: map[string]*OpResource{}}
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

	// Saved before it runs: a node that answers 202 has made the operation
	// visible to every node.
	if err := o.save(ctx, op); err != nil {
		o.mu.Lock()
		o.running--
		delete(o.byID, op.ID)
		o.order = slices.DeleteFunc(o.order, func(id string) bool { return id == op.ID })
		o.mu.Unlock()
		o.wg.Done()
		return OpResource{}, err
	}
	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(o.ctx, cancel)
	stepped := make(chan struct{}, 1)
	ended := make(chan struct{})
	beating := o.heartbeat(octx, op, stepped, ended)
	go func() {
		defer o.wg.Done()
		defer cancel()
		defer stop()
		out, err := fn(octx, func(step string, rows int64) {
			o.mu.Lock()
			defer o.mu.Unlock()
			if step != op.Step {
				select {
				case stepped <- struct{}{}:
				default:
				}
			}
			op.Step, op.Rows, op.UpdatedAt = step, rows, time.Now().UTC()
		})
		if err != nil && o.failed != nil {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(octx), 10*time.Second)
			o.failed(rctx, kind, slug, err)
			rcancel()
		}
		close(ended)
		<-beating
		o.mu.Lock()
		end := *op
		o.mu.Unlock()
		end.UpdatedAt = time.Now().UTC()
		end.FinishedAt = end.UpdatedAt
		if err != nil {
			end.State = OpFailed
			p := problemOf(err)
			end.Error = &p
			o.logger.LogAttrs(octx, slog.LevelWarn, "operation failed", slog.String("operation", op.ID),
				slog.String("kind", kind), slog.String("tenant", slug), slog.Any("error", err))
		} else {
			end.State, end.Result = OpSucceeded, out
		}
		// Saved before this process shows it ended, so that whoever sees it
		// ended here finds it ended everywhere.
		sctx, scancel := context.WithTimeout(context.WithoutCancel(octx), 10*time.Second)
		if err := o.saveSnap(sctx, end); err != nil {
			o.logger.LogAttrs(octx, slog.LevelError, "save the end of an operation", slog.String("operation", op.ID), slog.Any("error", err))
		}
		scancel()
		o.mu.Lock()
		*op = end
		o.running--
		o.mu.Unlock()
	}()
	return snap, nil
}

// heartbeat saves op while it runs: at once when it reports a new step
// (stepped), and every o.beat. It stops when ended is closed, and
// closes the channel it returns once it has.
func (o *operations) heartbeat(ctx context.Context, op *OpResource, stepped, ended <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	if o.store == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		t := time.NewTicker(o.beat)
		defer t.Stop()
		for {
			select {
			case <-ended:
				return
			case <-stepped:
			case <-t.C:
			}
			if err := o.save(ctx, op); err != nil {
				o.logger.LogAttrs(ctx, slog.LevelWarn, "save a running operation", slog.String("operation", op.ID), slog.Any("error", err))
			}
		}
	}()
	return done
}

// save writes op, as it is now, to the store, if there is one.
func (o *operations) save(ctx context.Context, op *OpResource) error {
	o.mu.Lock()
	snap := *op
	o.mu.Unlock()
	return o.saveSnap(ctx, snap)
}

// saveSnap writes snap to the store, if there is one.
func (o *operations) saveSnap(ctx context.Context, snap OpResource) error {
	if o.store == nil {
		return nil
	}
	doc, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode operation %s: %w", snap.ID, err)
	}
	return o.store.SaveAPIOperation(ctx, &catalog.APIOperation{ID: snap.ID, Node: o.node, Running: snap.State == OpRunning, Doc: doc})
}

// fromStore is the resource a stored operation shows: as saved, except that
// one saved as running whose node stopped saving it is shown failed.
func fromStore(rec *catalog.APIOperation) (OpResource, error) {
	var op OpResource
	if err := json.Unmarshal(rec.Doc, &op); err != nil {
		return OpResource{}, fmt.Errorf("decode operation %s: %w", rec.ID, err)
	}
	if rec.Running && rec.Age > staleAfter {
		op.State = OpFailed
		op.Error = &httpx.Problem{Type: "about:blank", Title: http.StatusText(http.StatusServiceUnavailable), Status: http.StatusServiceUnavailable,
			Code: tenancy.CodeUnavailable, Detail: fmt.Sprintf("the process that ran this operation (%s) stopped updating it %s ago, "+
				"at step %q: it was interrupted; post the operation again to finish it", rec.Node, rec.Age.Round(time.Second), op.Step)}
	}
	return op, nil
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

// get returns the operation: from this process's memory when it runs here
// (the freshest), else from the store. CodeNotFound when there is none.
func (o *operations) get(ctx context.Context, id string) (OpResource, error) {
	o.mu.Lock()
	op, ok := o.byID[id]
	var snap OpResource
	if ok {
		snap = *op
	}
	o.mu.Unlock()
	if ok {
		return snap, nil
	}
	if o.store == nil {
		return OpResource{}, tenancy.Errorf(tenancy.CodeNotFound, "no operation %q", id)
	}
	rec, err := o.store.APIOperationByID(ctx, id)
	if err != nil {
		return OpResource{}, err
	}
	return fromStore(rec)
}

// list returns the newest operations first, at most maxKept: the store's,
// with this process's running ones as they are in memory.
func (o *operations) list(ctx context.Context) ([]OpResource, error) {
	o.mu.Lock()
	mine := make(map[string]OpResource, len(o.byID))
	out := make([]OpResource, 0, len(o.order))
	for i := len(o.order) - 1; i >= 0; i-- {
		op := *o.byID[o.order[i]]
		mine[op.ID] = op
		out = append(out, op)
	}
	o.mu.Unlock()
	if o.store == nil {
		return out, nil
	}
	recs, err := o.store.APIOperations(ctx, maxKept)
	if err != nil {
		return nil, err
	}
	out = out[:0]
	for _, rec := range recs {
		op, ok := mine[rec.ID]
		if !ok {
			if op, err = fromStore(rec); err != nil {
				return nil, err
			}
		}
		out = append(out, op)
	}
	return out, nil
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
	op, err := a.ops.get(r.Context(), r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, op, nil
}

func (a *API) listOperations(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ops, err := a.ops.list(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"items": ops}, nil
}
