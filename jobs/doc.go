// Package jobs runs background jobs that keep their tenant, on River
// (riverqueue/river), a PostgreSQL job queue, with its tables in the catalog
// database.
//
// A job is enqueued with Insert under the tenant of the context — without one
// it is refused before anything is written — and carries the tenant's id,
// the actor and the request id in its metadata. When it runs, a worker added
// with AddWorker resolves the tenant again from the catalog (through the
// platform's cache, which follows every change), so the job runs under the
// same tenant wherever that tenant lives by then; if the tenant is suspended
// or being provisioned, the job waits and tries again; if the tenant was
// deleted, the job is cancelled. The work function gets a context that
// carries the tenant and the original actor, so router.Tx works in it as in
// the request that enqueued the job, and the audit trail names who caused the
// change.
//
//	workers := river.NewWorkers()
//	jobs.AddWorker(workers, p, func(ctx context.Context, job *river.Job[ImportArgs]) error {
//		return p.Router.Tx(ctx, func(tx pgx.Tx) error { … }) // ctx carries the tenant
//	})
//	c, err := jobs.Open(ctx, p, &jobs.Config{Workers: workers})
//	err = c.Start(ctx)
//	res, err := c.Insert(tenancy.WithTenant(ctx, t), ImportArgs{…}, nil)
package jobs
