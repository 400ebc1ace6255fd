package jobs_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/platform"
)

// Reminder is a job's arguments: they do not name the tenant.
type Reminder struct {
	DealID int64 `json:"deal_id"`
}

func (Reminder) Kind() string { return "deal_reminder" }

// Example enqueues a job under a tenant and works it under the same tenant.
// It needs a PostgreSQL server, so it is compiled but not run;
// TestJobKeepsItsTenant runs the same path.
func Example() {
	ctx := context.Background()
	var p *platform.Platform // platform.Open(…)
	workers := river.NewWorkers()
	jobs.AddWorker(workers, p, func(ctx context.Context, job *river.Job[Reminder]) error {
		// ctx carries the tenant the job was enqueued under, as the catalog
		// knows it now, and the actor who enqueued it.
		return p.Router.Tx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE deals SET stage = 'qualified' WHERE id = $1`, job.Args.DealID)
			return err
		})
	})
	c, err := jobs.Open(ctx, p, &jobs.Config{Workers: workers})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Stop(ctx)

	t, err := p.Catalog.TenantBySlug(ctx, "acme")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Insert(tenancy.WithTenant(ctx, t), Reminder{DealID: 7}, nil); err != nil {
		log.Fatal(err)
	}
}
