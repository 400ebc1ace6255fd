package move

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/provision"
)

// Config configures a Mover.
type Config struct {
	// Catalog holds the tenants, servers and moves. Required.
	Catalog *catalog.Catalog
	// Provisioner creates the destination's storage. Required.
	Provisioner *provision.Provisioner
	// Model is the tenant data model; source and destination must both be at
	// its latest version. Required.
	Model *datamodel.Model
	// FenceTimeout bounds the wait of the fence for the tenant's transactions
	// in flight, and so how long a transaction arriving meanwhile waits. A
	// move that cannot fence in time is rolled back. Default 5s.
	FenceTimeout time.Duration
	// CatchUpRows: after the bulk copy, the rows changed meanwhile are copied
	// again without a fence, in rounds, until a round copies fewer than this
	// many (at most 5 rounds); the fence then copies only the last round's
	// changes. Default 1000.
	CatchUpRows int64
	// DrainTimeout bounds how long the fence, once the catalog is switched,
	// waits for sessions on the source holding a snapshot older than the
	// switch (see the package documentation). Default 250ms.
	DrainTimeout time.Duration
	// Logger receives the steps of each move. Nil: discard.
	Logger *slog.Logger
}

// Mover moves tenants between isolation models and servers. It is safe for
// concurrent use; one tenant moves at most once at a time, also across
// processes.
type Mover struct {
	cfg Config
	// hook, set by tests, is called after each step; an error from it stops
	// the move on the spot, as if the process had died.
	hook func(step string) error
}

// New returns a Mover.
func New(cfg Config) (*Mover, error) {
	if cfg.Catalog == nil || cfg.Provisioner == nil || cfg.Model == nil {
		return nil, errors.New("move: Config.Catalog, Provisioner and Model are required")
	}
	if cfg.FenceTimeout <= 0 {
		cfg.FenceTimeout = 5 * time.Second
	}
	if cfg.CatchUpRows <= 0 {
		cfg.CatchUpRows = 1000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Mover{cfg: cfg}, nil
}

func (m *Mover) pool() *pgxpool.Pool { return m.cfg.Catalog.Pool() }

// Opts say where a tenant moves.
type Opts struct {
	// To is the destination's isolation model. Required.
	To tenancy.Model
	// Server is the destination server's name; empty: the tenant's server.
	Server string
	// KeepSource leaves the source's copy in place after the switch (marked
	// moved away, so never served) until DropKept or the tenant's purge
	// removes it; otherwise it is removed once the switch is done.
	KeepSource bool
	// Progress, if set, is called at each step and after each table copied.
	Progress func(Progress)
}

// Progress reports a move's advance.
type Progress struct {
	Slug  string `json:"slug"`
	Step  string `json:"step"`            // the step just done
	Table string `json:"table,omitempty"` // the table just copied, during the copy
	Rows  int64  `json:"rows"`            // rows copied so far
}

// Result describes a move.
type Result struct {
	ID        int64             `json:"id"`
	Tenant    *tenancy.Tenant   `json:"tenant"` // as the catalog places it now
	State     State             `json:"state"`
	From      tenancy.Placement `json:"from"`
	FromModel tenancy.Model     `json:"from_model"`
	To        tenancy.Placement `json:"to"`
	ToModel   tenancy.Model     `json:"to_model"`
	// Rows and Bytes are what the copy streamed (bulk, catch-up and fence).
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
	// Copy is the bulk copy's duration, the tenant working meanwhile.
	Copy time.Duration `json:"copy_ns"`
	// Pause is how long the fence held the tenant's writers: from asking for
	// the fence lock to releasing it; FencedAt is when it began.
	Pause    time.Duration `json:"pause_ns"`
	FencedAt time.Time     `json:"fenced_at,omitzero"`
	// FenceRows is how many rows the fence copied again.
	FenceRows int64 `json:"fence_rows"`
	// Resumed is true when this call finished (or rolled back) a move that an
	// earlier run left unfinished.
	Resumed bool `json:"resumed,omitempty"`
}

// errUndecided: the switch's outcome could not be read; the move stops where
// it is, for a run that can read it.
var errUndecided = errors.New("move undecided")

// errStop is returned by a test hook: the move stops where it is, with no
// roll back, as if the process had been killed.
var errStop = errors.New("move stopped by a test hook")

// ErrMismatch is wrapped by the error of a move whose verification found the
// destination different from the source. The move is rolled back.
var ErrMismatch = errors.New("the destination does not match the source")

// Move moves the tenant with the given slug to opts.To on opts.Server. It
// first finishes or rolls back an unfinished move of the tenant (see Resume);
// if that move was going to the same destination, its result is returned.
//
// Bad input changes nothing: an unknown model or server (CodeInvalid,
// CodeNotFound), an unknown tenant (CodeNotFound), a tenant that is not
// active or already placed there (CodeConflict, CodeInvalid), a source or
// destination not at the data model's latest version (CodeConflict).
func (m *Mover) Move(ctx context.Context, slug string, opts *Opts) (*Result, error) {
	if opts == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "move: no destination given")
	}
	model, err := tenancy.ParseModel(string(opts.To))
	if err != nil {
		return nil, err
	}
	if opts.Server != "" {
		if err := tenancy.ValidateName("server name", opts.Server); err != nil {
			return nil, err
		}
	}
	t, r, unlock, err := m.begin(ctx, slug)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r != nil {
		res, err := m.resume(ctx, r)
		if err != nil {
			return res, err
		}
		if res.State == Done && res.ToModel == model && (opts.Server == "" || opts.Server == res.To.Server) {
			return res, nil
		}
		if t, err = m.cfg.Catalog.Tenant(ctx, t.ID); err != nil {
			return nil, err
		}
	}
	server := opts.Server
	if server == "" {
		server = t.Placement.Server
	}
	s, err := m.cfg.Catalog.Server(ctx, server)
	if err != nil {
		return nil, err
	}
	if t.Status != tenancy.StatusActive {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is %s: only an active tenant can be moved", t.Slug, t.Status)
	}
	to, err := provision.Placement(s, t, model)
	if err != nil {
		return nil, err
	}
	if model == t.Model && to == t.Placement {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "tenant %q is already a %s tenant on server %q", t.Slug, model, s.Name)
	}
	if err := m.checkVersions(ctx, t, model, to); err != nil {
		return nil, err
	}
	r, err = m.start(ctx, t, model, to, opts.KeepSource)
	if err != nil {
		return nil, err
	}
	m.cfg.Logger.InfoContext(ctx, "move started", "tenant", t.Slug, "move", r.ID, "from", t.Placement.String(), "to", to.String())
	return m.run(ctx, r, t.Slug, opts.Progress)
}

// Resume finishes the tenant's unfinished move, if any: a move interrupted
// after its switch is finished (the source removed unless kept); one
// interrupted before is rolled back, the tenant staying at its source. It
// returns nil when there is nothing to resume.
func (m *Mover) Resume(ctx context.Context, slug string) (*Result, error) {
	_, r, unlock, err := m.begin(ctx, slug)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r == nil {
		return nil, nil
	}
	return m.resume(ctx, r)
}

// Unfinished reports whether the tenant has a move that an earlier run left
// unfinished, which Move and Resume finish or roll back first.
func (m *Mover) Unfinished(ctx context.Context, tenant uuid.UUID) (bool, error) {
	r, err := m.open(ctx, tenant)
	return r != nil, err
}

// begin looks up the tenant, locks its moves (see lockTenant) and returns
// its unfinished move, if any. unlock must be called when err is nil.
func (m *Mover) begin(ctx context.Context, slug string) (t *tenancy.Tenant, r *record, unlock func(), err error) {
	if t, err = m.cfg.Catalog.TenantBySlug(ctx, slug); err != nil {
		return nil, nil, nil, err
	}
	if unlock, err = m.lockTenant(ctx, t); err != nil {
		return nil, nil, nil, err
	}
	if r, err = m.open(ctx, t.ID); err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return t, r, unlock, nil
}

func (m *Mover) resume(ctx context.Context, r *record) (*Result, error) {
	res := r.result()
	res.Resumed = true
	m.cfg.Logger.InfoContext(ctx, "resuming move", "move", r.ID, "state", r.State)
	if r.State == Switched {
		if err := m.finish(ctx, r); err != nil {
			return res, err
		}
	} else if err := m.rollback(ctx, r, "interrupted; rolled back when run again"); err != nil {
		return res, err
	}
	return m.done(ctx, r, res)
}

func (r *record) result() *Result {
	return &Result{ID: r.ID, State: r.State, From: r.From, FromModel: r.FromModel, To: r.To, ToModel: r.ToModel}
}

func (m *Mover) done(ctx context.Context, r *record, res *Result) (*Result, error) {
	res.State = r.State
	t, err := m.cfg.Catalog.Tenant(ctx, r.Tenant)
	if err != nil {
		return res, err
	}
	res.Tenant = t
	return res, nil
}

// lockTenant makes movers of one tenant take turns, across processes: a
// session advisory lock on the catalog, which a dead process releases. It
// holds a connection of its own, outside the catalog's pool, for the whole
// move, so that many moves at once cannot take every pooled connection.
func (m *Mover) lockTenant(ctx context.Context, t *tenancy.Tenant) (unlock func(), err error) {
	conn, err := pgx.ConnectConfig(ctx, m.pool().Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect to the catalog: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('tenancy.move:' || $1::text, 0))`, t.ID).Scan(&ok); err != nil || !ok {
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("lock the tenant's moves: %w", err)
		}
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is being moved by another process", t.Slug)
	}
	return func() {
		// Released before the connection closes: a backend that is closing
		// still holds its locks for a moment, and the next move of the
		// tenant would find it taken.
		cctx := context.WithoutCancel(ctx)
		_, _ = conn.Exec(cctx, `SELECT pg_advisory_unlock(hashtextextended('tenancy.move:' || $1::text, 0))`, t.ID)
		conn.Close(cctx)
	}, nil
}

// checkVersions fails with CodeConflict unless the tenant's tables and, for
// the shared model, the destination's shared tables are at the data model's
// latest version, with no drift.
func (m *Mover) checkVersions(ctx context.Context, t *tenancy.Tenant, model tenancy.Model, to tenancy.Placement) error {
	check := func(p tenancy.Placement, what string) error {
		return m.adminTx(ctx, p, func(tx pgx.Tx) error {
			st, err := m.cfg.Model.StateTx(ctx, tx, p.Schema)
			if err != nil {
				return err
			}
			if !st.Current() {
				return tenancy.Errorf(tenancy.CodeConflict, "%s (%s) %s: run the migrations first",
					what, p, st.Describe(m.cfg.Model.Latest()))
			}
			return nil
		})
	}
	if err := check(t.Placement, "the tenant's tables"); err != nil {
		return err
	}
	if model == tenancy.ModelShared {
		return check(to, "the destination's shared tables")
	}
	return nil
}

// step reports a step done to the log, the progress callback and the test hook.
func (m *Mover) step(ctx context.Context, r *record, slug, name string, rows int64, progress func(Progress)) error {
	m.cfg.Logger.InfoContext(ctx, "move step", "tenant", slug, "move", r.ID, "step", name)
	if progress != nil {
		progress(Progress{Slug: slug, Step: name, Rows: rows})
	}
	if m.hook != nil {
		if err := m.hook(name); err != nil {
			return fmt.Errorf("%w: %w", errStop, err)
		}
	}
	return nil
}

// run takes a started move to its end, or rolls it back when it fails before
// the switch.
func (m *Mover) run(ctx context.Context, r *record, slug string, progress func(Progress)) (*Result, error) {
	res := r.result()
	err := m.forward(ctx, r, slug, progress, res)
	if err == nil {
		return m.done(ctx, r, res)
	}
	if errors.Is(err, errStop) || errors.Is(err, errUndecided) || r.State == Switched || r.State == Done {
		// After the switch the destination serves the tenant: running the
		// move again finishes it.
		return res, err
	}
	m.cfg.Logger.WarnContext(ctx, "move failed; rolling back", "tenant", slug, "move", r.ID, "err", err)
	if rbErr := m.rollback(context.WithoutCancel(ctx), r, err.Error()); rbErr != nil {
		return res, fmt.Errorf("move of tenant %q: %w (and rolling back failed: %v; run the move again to finish rolling back)", slug, err, rbErr)
	}
	res.State = r.State
	return res, fmt.Errorf("move of tenant %q rolled back: %w", slug, err)
}

func (m *Mover) forward(ctx context.Context, r *record, slug string, progress func(Progress), res *Result) error {
	if err := m.step(ctx, r, slug, string(Started), 0, progress); err != nil {
		return err
	}
	t, err := m.cfg.Catalog.Tenant(ctx, r.Tenant)
	if err != nil {
		return err
	}
	if err := m.prepare(ctx, r, t); err != nil {
		return err
	}
	if err := m.advance(ctx, r, Prepared, ""); err != nil {
		return err
	}
	if err := m.step(ctx, r, slug, string(Prepared), 0, progress); err != nil {
		return err
	}
	var bytes atomic.Int64
	c, err := m.copyAll(ctx, r, slug, progress, &bytes)
	if err != nil {
		return err
	}
	res.Copy, res.Rows = c.elapsed, c.rows
	if err := m.advance(ctx, r, Copied, "copied_seq = $2, rows_copied = $3, bytes_copied = $4", c.bulkSeq, c.rows, bytes.Load()); err != nil {
		return err
	}
	if err := m.step(ctx, r, slug, string(Copied), c.rows, progress); err != nil {
		return err
	}
	f, err := m.fence(ctx, r, slug, c, &bytes, progress)
	res.Bytes = bytes.Load()
	if f != nil {
		res.Pause, res.FencedAt, res.FenceRows = f.pause, f.start, f.rows
		res.Rows += f.rows
	}
	if err != nil {
		return err
	}
	if err := m.finish(ctx, r); err != nil {
		return err
	}
	return m.step(ctx, r, slug, string(Done), res.Rows, progress)
}

// finish removes the source (unless kept) of a switched move and records it done.
func (m *Mover) finish(ctx context.Context, r *record) error {
	if !r.KeepSource {
		if err := m.dropStorage(ctx, r.Tenant, r.FromModel, r.From, &r.To, r.ToModel); err != nil {
			return fmt.Errorf("remove the source: %w (the tenant is served at its destination; run the move again to finish)", err)
		}
		if m.hook != nil {
			if err := m.hook("dropped"); err != nil {
				return fmt.Errorf("%w: %w", errStop, err)
			}
		}
	}
	return m.advance(ctx, r, Done, "")
}

// rollback undoes a move that did not switch: the source's mark, if the
// fence left one, and what the move created or copied at the destination;
// the tenant is active at its source again.
func (m *Mover) rollback(ctx context.Context, r *record, reason string) error {
	if err := m.adminTx(ctx, r.From, func(tx pgx.Tx) error { return unmark(ctx, tx, r.Tenant, r.From.Schema, r.ID) }); err != nil {
		return fmt.Errorf("unmark the source: %w", err)
	}
	switch {
	case r.ToModel == tenancy.ModelShared:
		// The destination's mark stays: the tenant is not served there.
		if err := m.dropStorage(ctx, r.Tenant, r.ToModel, r.To, nil, ""); err != nil {
			return fmt.Errorf("remove the copy at the destination: %w", err)
		}
	case r.DstCreated:
		if err := m.dropStorage(ctx, r.Tenant, r.ToModel, r.To, &r.From, r.FromModel); err != nil {
			return fmt.Errorf("remove the destination: %w", err)
		}
	}
	return m.abandon(ctx, r, reason)
}
