package migrate_test

// BenchmarkFleet rolls one migration (a column and an index on contacts) over
// a fleet of schema and database tenants, first one target at a time and then
// in parallel, and then runs once more with nothing to apply. It reports the
// wall times and the speed-up. The fleet is built first (provisioning is not
// timed), so run it once:
//
//	go test -run '^$' -bench BenchmarkFleet -benchtime 1x -timeout 60m ./migrate/ -args -schemas 1000 -databases 50
//
// docs/PERFORMANCE.md records the results.

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/provision"
)

var (
	benchSchemas   = flag.Int("schemas", 100, "schema tenants in BenchmarkFleet")
	benchDatabases = flag.Int("databases", 10, "database tenants in BenchmarkFleet")
	benchParallel  = flag.Int("parallel", 0, "BenchmarkFleet's parallel bound (0: the default)")
)

func BenchmarkFleet(b *testing.B) {
	bundle := tenanttest.Setup(b, nil)
	ctx := context.Background()
	start := time.Now()
	tenants := createFleet(b, bundle, *benchSchemas, *benchDatabases)
	b.Logf("fleet: %d schema and %d database tenants created in %s", *benchSchemas, *benchDatabases, time.Since(start).Round(time.Millisecond))
	defer dropFleet(b, bundle, tenants)

	migration := func(v int) string {
		return fmt.Sprintf("ALTER TABLE contacts ADD COLUMN extra%d text;\nCREATE INDEX contacts_extra%d_idx ON contacts (tenant_id, extra%d);\n", v, v, v)
	}
	seqModel := modelWith(b, map[string]string{"1_extra.sql": migration(3)})
	parModel := modelWith(b, map[string]string{"1_extra.sql": migration(3), "2_extra.sql": migration(4)})
	up := func(cfg migrate.Config) (*migrate.Report, time.Duration) {
		cfg.Catalog, cfg.AppRole, cfg.SharedSchema = bundle.Platform.Catalog, bundle.AppRole, provision.SharedSchema
		m, err := migrate.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		rep, err := m.Up(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		return rep, time.Since(t0)
	}
	b.ResetTimer()
	for range b.N {
		seq, seqTime := up(migrate.Config{Model: seqModel, Parallel: 1})
		par, parTime := up(migrate.Config{Model: parModel, Parallel: *benchParallel})
		noop, noopTime := up(migrate.Config{Model: parModel, Parallel: *benchParallel})
		targets := len(noop.Results)
		if seq.Migrated != targets || par.Migrated != targets || noop.Current != targets {
			b.Fatalf("migrated %d sequentially, %d in parallel, %d current on the no-op run; want all %d", seq.Migrated, par.Migrated, noop.Current, targets)
		}
		b.ReportMetric(seqTime.Seconds(), "sequential-s")
		b.ReportMetric(parTime.Seconds(), "parallel-s")
		b.ReportMetric(seqTime.Seconds()/parTime.Seconds(), "speedup")
		b.ReportMetric(noopTime.Seconds(), "noop-s")
		b.ReportMetric(float64(targets), "targets")
		b.ReportMetric(float64(par.Peak), "peak-parallel")
	}
}

// createFleet provisions the tenants, several at a time.
func createFleet(b *testing.B, bundle *tenanttest.Bundle, schemas, databases int) []*tenancy.Tenant {
	var (
		mu      sync.Mutex
		out     []*tenancy.Tenant
		next    atomic.Int64
		failure atomic.Value
		wg      sync.WaitGroup
	)
	total := schemas + databases
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total || failure.Load() != nil {
					return
				}
				model := tenancy.ModelSchema
				if i >= schemas {
					model = tenancy.ModelDatabase
				}
				tn, err := bundle.Platform.CreateTenant(context.Background(), &provision.CreateOpts{
					Slug: pgtest.UniqueName("fl"), Model: model, Server: bundle.ServerNames[0],
				})
				if err != nil {
					failure.Store(err)
					return
				}
				mu.Lock()
				out = append(out, tn)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := failure.Load(); err != nil {
		dropFleet(b, bundle, out)
		b.Fatalf("create fleet: %v", err)
	}
	return out
}

// dropFleet drops what outlives the test databases: tenant databases and roles.
func dropFleet(b *testing.B, bundle *tenanttest.Bundle, tenants []*tenancy.Tenant) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, bundle.Servers[0].URL("postgres"))
	if err != nil {
		b.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close(ctx)
	for _, tn := range tenants {
		if tn.Model == tenancy.ModelDatabase {
			_ = dataplane.DropDatabase(ctx, conn, tn.Placement.Database)
		}
	}
	// Roles last: the schemas that hold grants go with the test database.
	b.Cleanup(func() {
		conn, err := pgx.Connect(ctx, bundle.Servers[0].URL("postgres"))
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		for _, tn := range tenants {
			_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+dataplane.Ident(tn.Role()))
		}
	})
}
