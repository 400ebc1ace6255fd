package jobs_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/move"
)

// addContact is the test's job: add a contact to the tenant it runs under.
type addContact struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

func (addContact) Kind() string { return "test.add_contact" }

type testBundle struct {
	*tenanttest.Bundle
	client  *jobs.Client
	a, b, c *tenancy.Tenant
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	tb := &testBundle{Bundle: tenanttest.Setup(t, nil)}
	p := tb.Platform
	tb.a = tb.CreateTenant(t, tenancy.ModelShared, tb.ServerNames[0])
	tb.b = tb.CreateTenant(t, tenancy.ModelShared, tb.ServerNames[0])
	tb.c = tb.CreateTenant(t, tenancy.ModelSchema, tb.ServerNames[0])
	workers := river.NewWorkers()
	jobs.AddWorker(workers, p, func(ctx context.Context, job *river.Job[addContact]) error {
		t, _ := tenancy.TenantFromContext(ctx)
		return p.Router.Tx(ctx, func(tx pgx.Tx) error {
			// The tenant comes from the context only: the job's
			// arguments do not name it.
			_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, $2, $3)`, t.ID, job.Args.Name, job.Args.Email)
			return err
		})
	})
	var err error
	tb.client, err = jobs.Open(context.Background(), p, &jobs.Config{Workers: workers, FetchPollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tb.client.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return tb
}

// wait waits until the job reaches one of the states.
func (tb *testBundle) wait(t *testing.T, id int64, states ...rivertype.JobState) *rivertype.JobRow {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := tb.client.River().JobGet(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			if j.State == s {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d is %s, want one of %v (errors: %v)", id, j.State, states, j.Errors)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// contacts returns the emails of tenant tn's contacts, read as the
// administrator (no tenant filter but the one in the query).
func (tb *testBundle) contacts(t *testing.T, tn *tenancy.Tenant) []string {
	t.Helper()
	rows, err := tb.AdminConn(t, tn).Query(context.Background(),
		`SELECT email FROM `+pgx.Identifier{tn.Placement.Schema, "contacts"}.Sanitize()+` WHERE tenant_id = $1 ORDER BY email`, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJobKeepsItsTenant(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bg := context.Background()

	t.Run("NoTenant", func(t *testing.T) {
		_, err := tb.client.Insert(bg, addContact{Name: "Nobody", Email: "nobody@example.com"}, nil)
		tenanttest.WantCode(t, "insert without a tenant", err, tenancy.CodeNoTenant)
	})

	t.Run("RunsUnderItsTenant", func(t *testing.T) {
		ctx := tenancy.WithActor(tenanttest.Ctx(tb.a), tenancy.Actor{Kind: "user", ID: "42"})
		ctx = tenancy.WithRequestID(ctx, "req-job-1")
		res, err := tb.client.Insert(ctx, addContact{Name: "Ada", Email: "ada@a.example"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tb.wait(t, res.Job.ID, rivertype.JobStateCompleted)
		if got := tb.contacts(t, tb.a); len(got) != 1 || got[0] != "ada@a.example" {
			t.Errorf("tenant A has %v", got)
		}
		for _, other := range []*tenancy.Tenant{tb.b, tb.c} {
			if got := tb.contacts(t, other); len(got) != 0 {
				t.Errorf("a job of A wrote to %s: %v", other.Slug, got)
			}
		}
		// The audit trail names who caused the change, and the job.
		var actor, reqID string
		if err := tb.AdminConn(t, tb.a).QueryRow(bg, `SELECT actor, request_id FROM shared.tenancy_audit
			WHERE tenant_id = $1 AND table_name = 'contacts'`, tb.a.ID).Scan(&actor, &reqID); err != nil {
			t.Fatal(err)
		}
		if actor != "user:42" || reqID == "" {
			t.Errorf("audit: actor %q, request %q", actor, reqID)
		}
		// Another tenant cannot see the job.
		_, err = tb.client.Job(tenanttest.Ctx(tb.b), res.Job.ID)
		tenanttest.WantCode(t, "B reads A's job", err, tenancy.CodeNotFound)
		if _, err := tb.client.Job(tenanttest.Ctx(tb.a), res.Job.ID); err != nil {
			t.Errorf("A reads its job: %v", err)
		}
	})

	t.Run("SchemaTenant", func(t *testing.T) {
		res, err := tb.client.Insert(tenanttest.Ctx(tb.c), addContact{Name: "Grace", Email: "grace@c.example"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tb.wait(t, res.Job.ID, rivertype.JobStateCompleted)
		if got := tb.contacts(t, tb.c); len(got) != 1 {
			t.Errorf("tenant C has %v", got)
		}
	})

	// A tenant being moved is served: its jobs keep running.
	t.Run("WhileMoving", func(t *testing.T) {
		if _, err := tb.Platform.Catalog.SetStatus(bg, tb.c.ID, tenancy.StatusMoving, tenancy.StatusActive); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = tb.Platform.Catalog.SetStatus(bg, tb.c.ID, tenancy.StatusActive, tenancy.StatusMoving) })
		res, err := tb.client.Insert(tenanttest.Ctx(tb.c), addContact{Name: "Moving", Email: "moving@c.example"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tb.wait(t, res.Job.ID, rivertype.JobStateCompleted)
	})

	// The tenant is resolved when the job runs, not when it was enqueued: a
	// job enqueued while the tenant was active waits while it is suspended.
	t.Run("ResolvedAtRunTime", func(t *testing.T) {
		stale := tb.b // the context keeps the active tenant
		if _, err := tb.Platform.Catalog.SetStatus(bg, tb.b.ID, tenancy.StatusSuspended, tenancy.StatusActive); err != nil {
			t.Fatal(err)
		}
		res, err := tb.client.Insert(tenanttest.Ctx(stale), addContact{Name: "Linus", Email: "linus@b.example"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		j := tb.wait(t, res.Job.ID, rivertype.JobStateScheduled, rivertype.JobStateCompleted)
		if j.State != rivertype.JobStateScheduled {
			t.Fatalf("a job of a suspended tenant ran: %s", j.State)
		}
		if got := tb.contacts(t, tb.b); len(got) != 0 {
			t.Fatalf("a job of a suspended tenant wrote %v", got)
		}
		if _, err := tb.Platform.Catalog.SetStatus(bg, tb.b.ID, tenancy.StatusActive, tenancy.StatusSuspended); err != nil {
			t.Fatal(err)
		}
		// The catalog's notification reaches the cache asynchronously.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			cached, err := tb.Platform.Cache.ResolveID(bg, tb.b.ID)
			if err == nil && cached.Status == tenancy.StatusActive {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cache still has %v, %v", cached, err)
			}
		}
		// Run the snoozed job now rather than in RetrySuspended.
		if _, err := tb.client.River().JobRetry(bg, res.Job.ID); err != nil {
			t.Fatal(err)
		}
		tb.wait(t, res.Job.ID, rivertype.JobStateCompleted)
		if got := tb.contacts(t, tb.b); len(got) != 1 {
			t.Errorf("after resume, B has %v", got)
		}
	})
}

// TestJobsAcrossARealMove: jobs of a tenant enqueued before and during a real
// move of it (schema to its own database, with the write fence and the
// switch) all complete at their first attempt (River does not retry them:
// the router's own retry at the new placement is what carries them), each
// write once, at the tenant's new placement.
func TestJobsAcrossARealMove(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bg := context.Background()
	var ids []int64
	enqueue := func(i int) {
		res, err := tb.client.Insert(tenanttest.Ctx(tb.c), addContact{Name: "Mover", Email: fmt.Sprintf("mover%d@c.example", i)}, &river.InsertOpts{MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Job.ID)
	}
	for i := range 20 {
		enqueue(i)
	}
	moved := make(chan error, 1)
	go func() {
		_, err := tb.Platform.Mover.Move(bg, tb.c.Slug, &move.Opts{To: tenancy.ModelDatabase})
		moved <- err
	}()
	// Jobs go on arriving until the move has ended, and a little after,
	// while caches still name the old placement.
	i := 20
	for done := false; !done; i++ {
		select {
		case err := <-moved:
			if err != nil {
				t.Fatalf("move: %v", err)
			}
			done = true
		case <-time.After(3 * time.Millisecond):
		}
		enqueue(i)
	}
	for end := i + 20; i < end; i++ {
		enqueue(i)
	}
	for _, id := range ids {
		tb.wait(t, id, rivertype.JobStateCompleted)
	}
	now, err := tb.Platform.Catalog.Tenant(bg, tb.c.ID)
	if err != nil || now.Model != tenancy.ModelDatabase {
		t.Fatalf("after the move: %+v %v", now, err)
	}
	t.Cleanup(func() { tb.Track(now) })
	got := tb.contacts(t, now)
	if len(got) != len(ids) || len(slices.Compact(slices.Clone(got))) != len(ids) {
		t.Errorf("%d contacts (%d distinct) at the new placement, want each of the %d jobs' once", len(got), len(slices.Compact(slices.Clone(got))), len(ids))
	}
}
