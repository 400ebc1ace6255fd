package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/platform"
)

// DefaultSchema holds River's tables in the catalog database.
const DefaultSchema = "tenancy_jobs"

// Config configures a Client. Nil means defaults and no workers (a client
// that only inserts).
type Config struct {
	// Workers are the job kinds this process works, added with AddWorker.
	// Nil: this client inserts jobs but works none.
	Workers *river.Workers
	// Queues and their concurrency. Default: the default queue, 10 workers.
	Queues map[string]river.QueueConfig
	// Schema holds River's tables in the catalog database. Default
	// DefaultSchema.
	Schema string
	// MaxConns bounds the client's own connections to the catalog
	// database. Default 10.
	MaxConns int32
	// FetchPollInterval is how often queues are polled besides
	// notifications. Default River's (1s); tests lower it.
	FetchPollInterval time.Duration
	// Logger receives River's logs. Nil: discard.
	Logger *slog.Logger
}

// Client enqueues and, with workers, runs tenant jobs.
type Client struct {
	river   *river.Client[pgx.Tx]
	pool    *pgxpool.Pool
	started bool
}

// Open creates or upgrades River's tables in the catalog database and
// returns a client. Start it to work jobs.
func Open(ctx context.Context, p *platform.Platform, cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	pcfg := p.Catalog.Pool().Config().Copy()
	pcfg.MaxConns = c.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("jobs: connect: %w", err)
	}
	if _, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{c.Schema}.Sanitize()); err != nil {
		pool.Close()
		return nil, fmt.Errorf("jobs: create schema %s: %w", c.Schema, err)
	}
	driver := riverpgxv5.New(pool)
	mig, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: c.Schema, Logger: c.Logger})
	if err != nil {
		pool.Close()
		return nil, err
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		pool.Close()
		return nil, fmt.Errorf("jobs: migrate River's tables: %w", err)
	}
	rc := &river.Config{Schema: c.Schema, Logger: c.Logger, FetchPollInterval: c.FetchPollInterval}
	if c.Workers != nil {
		rc.Workers = c.Workers
		rc.Queues = c.Queues
		if rc.Queues == nil {
			rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 10}}
		}
	}
	if c.FetchPollInterval > 0 && c.FetchPollInterval < river.FetchCooldownDefault {
		rc.FetchCooldown = c.FetchPollInterval
	}
	client, err := river.NewClient(driver, rc)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("jobs: %w", err)
	}
	return &Client{river: client, pool: pool}, nil
}

// Start starts working jobs; it needs Config.Workers.
func (c *Client) Start(ctx context.Context) error {
	if err := c.river.Start(ctx); err != nil {
		return err
	}
	c.started = true
	return nil
}

// Stop stops fetching jobs, waits for running ones (until ctx is done), and
// closes the client's connections.
func (c *Client) Stop(ctx context.Context) error {
	var err error
	if c.started {
		err = c.river.Stop(ctx)
	}
	c.pool.Close()
	return err
}

// River returns the underlying River client, for what this package does not
// wrap (queues, subscriptions). Jobs inserted through it directly carry no
// tenant, and tenant workers refuse them.
func (c *Client) River() *river.Client[pgx.Tx] { return c.river }

// metaKey is the key of the tenancy object in a job's metadata.
const metaKey = "tenancy"

// meta is what a job carries about where it comes from.
type meta struct {
	TenantID  uuid.UUID `json:"tenant_id"`
	Tenant    string    `json:"tenant"` // the slug at insert time, for people reading the queue
	Actor     string    `json:"actor,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
}

// Insert enqueues a job under the tenant of ctx (CodeNoTenant without one,
// before anything is written). opts may be nil; its Metadata, if any, must be
// a JSON object and keeps its other keys.
func (c *Client) Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	t, ok := tenancy.TenantFromContext(ctx)
	if !ok {
		return nil, tenancy.Errorf(tenancy.CodeNoTenant, "no tenant in context: a tenant job must be enqueued under its tenant (tenancy.WithTenant)")
	}
	o := river.InsertOpts{}
	if opts != nil {
		o = *opts
	}
	md := map[string]any{}
	if len(o.Metadata) > 0 {
		if err := json.Unmarshal(o.Metadata, &md); err != nil {
			return nil, tenancy.Errorf(tenancy.CodeInvalid, "job metadata must be a JSON object: %v", err)
		}
	}
	a, _ := tenancy.ActorFromContext(ctx)
	md[metaKey] = meta{TenantID: t.ID, Tenant: t.Slug, Actor: a.String(), RequestID: tenancy.RequestIDFromContext(ctx)}
	b, err := json.Marshal(md)
	if err != nil {
		return nil, err
	}
	o.Metadata = b
	res, err := c.river.Insert(ctx, args, &o)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s job: %w", args.Kind(), err)
	}
	return res, nil
}

// Job returns a job enqueued under the tenant of ctx; a job of another tenant
// (or none) is not found.
func (c *Client) Job(ctx context.Context, id int64) (*rivertype.JobRow, error) {
	t, ok := tenancy.TenantFromContext(ctx)
	if !ok {
		return nil, tenancy.ErrNoTenant
	}
	j, err := c.river.JobGet(ctx, id)
	if errors.Is(err, river.ErrNotFound) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "job %d not found", id)
	}
	if err != nil {
		return nil, err
	}
	if m, err := jobMeta(j.Metadata); err != nil || m.TenantID != t.ID {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "job %d not found", id)
	}
	return j, nil
}

func jobMeta(raw []byte) (meta, error) {
	var md struct {
		Tenancy *meta `json:"tenancy"`
	}
	if err := json.Unmarshal(raw, &md); err != nil || md.Tenancy == nil || md.Tenancy.TenantID == uuid.Nil {
		return meta{}, errors.New("the job carries no tenant")
	}
	return *md.Tenancy, nil
}

// Retry delays used when the tenant cannot be served for now.
var (
	// RetrySuspended is how long a job waits while its tenant is suspended.
	RetrySuspended = time.Minute
	// RetryUnavailable is how long a job waits while its tenant is being
	// provisioned or otherwise unavailable.
	RetryUnavailable = 5 * time.Second
)

// AddWorker registers fn as the worker of T's kind: it runs each job under
// the tenant it was enqueued under, resolved again from the catalog at run
// time. A job of a suspended or unavailable tenant is snoozed; a job whose
// tenant is deleted, unknown or missing is cancelled.
func AddWorker[T river.JobArgs](workers *river.Workers, p *platform.Platform, fn func(ctx context.Context, job *river.Job[T]) error) {
	river.AddWorker(workers, &worker[T]{p: p, fn: fn})
}

type worker[T river.JobArgs] struct {
	river.WorkerDefaults[T]
	p  *platform.Platform
	fn func(ctx context.Context, job *river.Job[T]) error
}

func (w *worker[T]) Work(ctx context.Context, job *river.Job[T]) error {
	ctx, err := w.tenantContext(ctx, job.JobRow)
	if err != nil {
		return err
	}
	return w.fn(ctx, job)
}

// tenantContext returns ctx carrying the job's tenant as the catalog knows it
// now, its actor and a request id naming the job.
func (w *worker[T]) tenantContext(ctx context.Context, job *rivertype.JobRow) (context.Context, error) {
	m, err := jobMeta(job.Metadata)
	if err != nil {
		return nil, river.JobCancel(fmt.Errorf("job %d: %w", job.ID, err))
	}
	t, err := w.p.Cache.ResolveID(ctx, m.TenantID)
	if err == nil {
		err = t.CheckServable()
	}
	if err != nil {
		switch tenancy.ErrorCode(err) {
		case tenancy.CodeSuspended:
			return nil, river.JobSnooze(RetrySuspended)
		case tenancy.CodeUnavailable:
			return nil, river.JobSnooze(RetryUnavailable)
		case tenancy.CodeGone, tenancy.CodeNotFound:
			return nil, river.JobCancel(fmt.Errorf("job %d: %w", job.ID, err))
		}
		return nil, err // a catalog error: retried with River's backoff
	}
	ctx = tenancy.WithTenant(ctx, t)
	if kind, id, ok := strings.Cut(m.Actor, ":"); ok {
		ctx = tenancy.WithActor(ctx, tenancy.Actor{Kind: kind, ID: id})
	} else {
		ctx = tenancy.WithActor(ctx, tenancy.Actor{Kind: "job", ID: job.Kind})
	}
	return tenancy.WithRequestID(ctx, fmt.Sprintf("job-%d", job.ID)), nil
}
