package migrate

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/internal/dataplane"
)

// fleetLock is the advisory lock, on the catalog database, that one migrator
// holds for a whole run.
const fleetLock int64 = 0x74656e616e6379 // "tenancy"

// maxPasses bounds how often Up looks for targets created while it ran.
const maxPasses = 5

// Config configures a Migrator.
type Config struct {
	// Catalog lists the servers and tenants. Required.
	Catalog *catalog.Catalog
	// Model is the data model to apply. Required.
	Model *datamodel.Model
	// AppRole is granted the shared tables. Required.
	AppRole string
	// SharedSchema holds the shared tables in each server's shared database.
	// Default "shared".
	SharedSchema string
	// Parallel bounds the targets migrating at once. Default: twice the
	// number of CPUs, at least 4.
	Parallel int
	// PerServer bounds the targets of one server migrating at once (and the
	// administrative connections to it). Default: Parallel.
	PerServer int
	// LockTimeout, if positive, bounds how long a target's migration waits for
	// a table lock (SET LOCAL lock_timeout) before it fails, so that a busy
	// table fails one target instead of stalling the fleet.
	LockTimeout time.Duration
}

// Migrator applies the data model across the fleet. It is safe for concurrent
// use, but runs of Up exclude each other (also across processes).
type Migrator struct{ cfg Config }

// New returns a Migrator.
func New(cfg Config) (*Migrator, error) {
	if cfg.Catalog == nil || cfg.Model == nil || cfg.AppRole == "" {
		return nil, errors.New("migrate: Config.Catalog, Model and AppRole are required")
	}
	if cfg.SharedSchema == "" {
		cfg.SharedSchema = "shared"
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = max(4, 2*runtime.NumCPU())
	}
	if cfg.PerServer <= 0 || cfg.PerServer > cfg.Parallel {
		cfg.PerServer = cfg.Parallel
	}
	return &Migrator{cfg: cfg}, nil
}

// UpOpts are the optional settings of Up. Nil means defaults: every target, go
// on past failures.
type UpOpts struct {
	// Canary migrates the first Canary targets (in Status order) before any
	// other, and stops at their first failure.
	Canary int
	// Group, when set, is the canary instead: "server:NAME", "model:MODEL",
	// "tier:TIER" or "tenants:SLUG,SLUG".
	Group string
	// FailFast stops at the first failing target: targets not yet started are
	// reported skipped.
	FailFast bool
	// Progress, if set, is called after each target, one call at a time.
	Progress func(Result)
}

// Outcome is what happened to one target.
type Outcome string

// The outcomes of a target.
const (
	Migrated Outcome = "migrated" // migrations were applied, or this library's SQL to a stale target (Applied 0)
	Current  Outcome = "current"  // nothing to apply
	Failed   Outcome = "failed"   // rolled back; see Result.Err
	Skipped  Outcome = "skipped"  // not attempted; see Result.Reason
)

// Result is one target's part of a run.
type Result struct {
	Target  Target        `json:"target"`
	Outcome Outcome       `json:"outcome"`
	From    int           `json:"from"`
	To      int           `json:"to"`
	Applied int           `json:"applied"`
	Reason  string        `json:"reason,omitempty"`
	Err     error         `json:"-"`
	Error   string        `json:"error,omitempty"` // Err's text, for JSON
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Report sums up a run of Up.
type Report struct {
	Results  []Result      `json:"results"`
	Migrated int           `json:"migrated"`
	Current  int           `json:"current"`
	Failed   int           `json:"failed"`
	Skipped  int           `json:"skipped"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	// PeakPerServer is the most targets of one server that migrated at once.
	PeakPerServer int `json:"peak_per_server"`
	// Peak is the most targets that migrated at once.
	Peak int `json:"peak"`
}

// ErrFailed is returned by Up, wrapped, when some target failed.
var ErrFailed = errors.New("some targets failed to migrate")

// Up brings every target to the model's latest version. It returns the report
// and, if any target failed (or the canary did), an error wrapping ErrFailed;
// the report is complete in both cases. It fails with CodeConflict, touching
// nothing, while another Up runs.
func (m *Migrator) Up(ctx context.Context, opts *UpOpts) (*Report, error) {
	if opts == nil {
		opts = &UpOpts{}
	}
	if opts.Canary < 0 {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "canary must not be negative, got %d", opts.Canary)
	}
	var canary func(Target) bool
	if opts.Group != "" {
		var err error
		if canary, err = parseGroup(opts.Group); err != nil {
			return nil, err
		}
	}
	unlock, err := m.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()

	start := time.Now()
	r := &run{m: m, opts: opts, report: &Report{}, peakByServer: map[string]int{}, inServer: map[string]int{}}
	defer r.closePools()
	done := map[string]bool{}
	targets, err := m.targets(ctx)
	if err != nil {
		return nil, err
	}
	if canary != nil || opts.Canary > 0 {
		var first []Target
		for i, t := range targets {
			if (canary != nil && canary(t)) || (canary == nil && i < opts.Canary) {
				first = append(first, t)
				done[t.key()] = true
			}
		}
		if canary != nil && len(first) == 0 {
			return nil, tenancy.Errorf(tenancy.CodeInvalid, "group %q matches no target", opts.Group)
		}
		if failed := r.runAll(ctx, first, true); failed > 0 {
			r.finish(start)
			return r.report, fmt.Errorf("canary: %d of %d targets failed, the rest were not touched: %w", failed, len(first), ErrFailed)
		}
	}
	for pass := 0; pass < maxPasses; pass++ {
		var todo []Target
		for _, t := range targets {
			if !done[t.key()] {
				done[t.key()] = true
				todo = append(todo, t)
			}
		}
		if len(todo) == 0 {
			break
		}
		if failed := r.runAll(ctx, todo, opts.FailFast); failed > 0 && opts.FailFast {
			break
		}
		// Look again: a tenant created meanwhile by a node running older code
		// would otherwise stay behind.
		if targets, err = m.targets(ctx); err != nil {
			return r.report, err
		}
	}
	r.finish(start)
	if r.report.Failed > 0 {
		return r.report, fmt.Errorf("%d of %d targets failed: %w", r.report.Failed, len(r.report.Results), ErrFailed)
	}
	return r.report, nil
}

// lock takes the fleet lock on the catalog, or fails with CodeConflict.
func (m *Migrator) lock(ctx context.Context) (unlock func(), err error) {
	conn, err := m.cfg.Catalog.Pool().Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the catalog: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, fleetLock).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, tenancy.Errorf(tenancy.CodeConflict, "another migration of the fleet is running; try again when it has finished")
	}
	return func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, fleetLock); err != nil {
			conn.Conn().PgConn().Close(context.WithoutCancel(ctx)) // closing the session releases the lock
		}
		conn.Release()
	}, nil
}

// run is one call of Up.
type run struct {
	m    *Migrator
	opts *UpOpts

	mu           sync.Mutex
	report       *Report
	inFlight     int
	inServer     map[string]int
	peakByServer map[string]int
	pools        map[string]*pgxpool.Pool
	configs      map[string]*pgx.ConnConfig
}

// runAll migrates targets under the bounds and returns how many failed.
// With failFast the first failure stops targets not yet started; those in
// flight finish.
func (r *run) runAll(ctx context.Context, targets []Target, failFast bool) (failed int) {
	var todo []Target
	for _, t := range targets {
		if t.skip != "" {
			r.record(Result{Target: t, Outcome: Skipped, Reason: t.skip})
			continue
		}
		todo = append(todo, t)
	}
	rest := schedule(ctx, todo, r.m.cfg.Parallel, r.m.cfg.PerServer, func(t Target) any { return r.migrate(ctx, t) },
		func(_ Target, v any) (stop bool) {
			res := v.(Result)
			r.record(res)
			if res.Outcome == Failed {
				failed++
				return failFast
			}
			return false
		})
	reason := "not started: an earlier target failed"
	if ctx.Err() != nil {
		reason = "not started: " + ctx.Err().Error()
	}
	for _, t := range rest {
		r.record(Result{Target: t, Outcome: Skipped, Reason: reason})
	}
	return failed
}

// schedule runs work for each target in list order, at most parallel at once
// and perServer per server, starting a later target when an earlier one's
// server is full. done receives each result, one at a time; once it returns
// true, or ctx ends, no further target starts. schedule returns when every
// started target is done, with the targets it never started.
func schedule(ctx context.Context, targets []Target, parallel, perServer int, work func(Target) any, done func(Target, any) bool) (notStarted []Target) {
	type finished struct {
		t Target
		v any
	}
	results := make(chan finished)
	perServerNow := map[string]int{}
	running, stopped := 0, false
	pending := slices.Clone(targets)
	for {
		for !stopped && running < parallel {
			i := slices.IndexFunc(pending, func(t Target) bool { return perServerNow[t.Server] < perServer })
			if i < 0 {
				break
			}
			t := pending[i]
			pending = slices.Delete(pending, i, i+1)
			perServerNow[t.Server]++
			running++
			go func() { results <- finished{t, work(t)} }()
		}
		if running == 0 {
			return pending
		}
		f := <-results
		running--
		perServerNow[f.t.Server]--
		if done(f.t, f.v) || ctx.Err() != nil {
			stopped = true
		}
	}
}

// migrate migrates one target in its own transaction.
func (r *run) migrate(ctx context.Context, t Target) Result {
	r.enter(t.Server, 1)
	defer r.enter(t.Server, -1)
	start := time.Now()
	res := Result{Target: t}
	prepared := false // ApplyTx ran: migrations, or this library's SQL for a stale target
	err := r.withConn(ctx, t, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if r.m.cfg.LockTimeout > 0 {
				if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, fmt.Sprintf("%dms", r.m.cfg.LockTimeout.Milliseconds())); err != nil {
					return err
				}
			}
			st, err := r.m.cfg.Model.StateTx(ctx, tx, t.Schema)
			if err != nil {
				return err
			}
			res.From, res.To = st.Version, st.Version
			if st.Current() {
				return nil
			}
			n, err := r.m.cfg.Model.ApplyTx(ctx, tx, t.datamodelTarget())
			if err != nil {
				return err
			}
			res.Applied, res.To, prepared = n, r.m.cfg.Model.Latest(), true
			return nil
		})
	})
	res.Elapsed = time.Since(start)
	switch {
	case err != nil:
		res.Outcome, res.Err, res.Error, res.To, res.Applied = Failed, err, err.Error(), res.From, 0
	case prepared:
		res.Outcome = Migrated
	default:
		res.Outcome = Current
	}
	return res
}

// withConn runs fn on an administrative connection to t's database: pooled
// for a database that holds several targets (the shared database: shared
// tables and tenant schemas), a connection of its own for a tenant database.
func (r *run) withConn(ctx context.Context, t Target, fn func(*pgx.Conn) error) error {
	cfg, err := r.serverConfig(ctx, t.Server)
	if err != nil {
		return err
	}
	if t.Kind == KindDatabase {
		cfg.Database = t.Database
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("connect to %s/%s: %w", t.Server, t.Database, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		return fn(conn)
	}
	pool, err := r.pool(ctx, t.Server+"/"+t.Database, cfg)
	if err != nil {
		return err
	}
	return pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error { return fn(c.Conn()) })
}

// serverConfig is the administrative connection config of a server, read
// from the catalog once per run. The caller may change its copy.
func (r *run) serverConfig(ctx context.Context, name string) (*pgx.ConnConfig, error) {
	r.mu.Lock()
	cfg, ok := r.configs[name]
	r.mu.Unlock()
	if !ok {
		s, err := r.m.cfg.Catalog.Server(ctx, name)
		if err != nil {
			return nil, err
		}
		if cfg, err = parseDSN(s); err != nil {
			return nil, err
		}
		r.mu.Lock()
		if r.configs == nil {
			r.configs = map[string]*pgx.ConnConfig{}
		}
		r.configs[name] = cfg
		r.mu.Unlock()
	}
	return cfg.Copy(), nil
}

func (r *run) pool(ctx context.Context, key string, cfg *pgx.ConnConfig) (*pgxpool.Pool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pools[key]; ok {
		return p, nil
	}
	pcfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return nil, err
	}
	pcfg.ConnConfig = cfg
	pcfg.MaxConns = int32(r.m.cfg.PerServer)
	p, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", key, err)
	}
	if r.pools == nil {
		r.pools = map[string]*pgxpool.Pool{}
	}
	r.pools[key] = p
	return p, nil
}

func (r *run) closePools() {
	for _, p := range r.pools {
		p.Close()
	}
}

// enter counts targets in flight, overall and per server, and their peaks.
func (r *run) enter(server string, d int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight += d
	r.inServer[server] += d
	r.report.Peak = max(r.report.Peak, r.inFlight)
	r.report.PeakPerServer = max(r.report.PeakPerServer, r.inServer[server])
}

func (r *run) record(res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Results = append(r.report.Results, res)
	switch res.Outcome {
	case Migrated:
		r.report.Migrated++
	case Current:
		r.report.Current++
	case Failed:
		r.report.Failed++
	case Skipped:
		r.report.Skipped++
	}
	if r.opts.Progress != nil {
		r.opts.Progress(res)
	}
}

func (r *run) finish(start time.Time) {
	r.report.Elapsed = time.Since(start)
}

// parseDSN parses a server's administrative DSN (see dataplane.AdminConfig).
func parseDSN(s *tenancy.Server) (*pgx.ConnConfig, error) {
	return dataplane.AdminConfig(s, "")
}

// InProgress reports whether a fleet migration is running on the catalog:
// whether some session holds the fleet lock. For metrics and dashboards.
func InProgress(ctx context.Context, cat *catalog.Catalog) (bool, error) {
	var held bool
	err := cat.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid)`, fleetLock).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("look for a running fleet migration: %w", err)
	}
	return held, nil
}
