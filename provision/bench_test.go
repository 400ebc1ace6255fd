package provision_test

// BenchmarkProvision creates tenants one after the other in each model and
// reports the median and 90th percentile time per tenant, catalog records
// included: shared (catalog only), schema (role, then schema and data model in
// one transaction), database (clone of the server's template database) and
// database-replay (an empty database, the data model's migrations replayed).
// One tenant of each is created first, untimed (it builds the template). Run
// it once:
//
//	go test -run '^$' -bench BenchmarkProvision -benchtime 1x -timeout 30m ./provision/ -args -tenants 100
//
// docs/PERFORMANCE.md records the results.

import (
	"context"
	"flag"
	"slices"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/provision"
)

var benchTenants = flag.Int("tenants", 100, "tenants per model in BenchmarkProvision")

func BenchmarkProvision(b *testing.B) {
	bundle := tenanttest.Setup(b, nil)
	ctx := context.Background()
	model, err := datamodel.Load(crm.Migrations())
	if err != nil {
		b.Fatal(err)
	}
	key, err := bundle.Platform.Catalog.TenantKey(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		model      tenancy.Model
		noTemplate bool
	}{
		{"shared", tenancy.ModelShared, false},
		{"schema", tenancy.ModelSchema, false},
		{"database", tenancy.ModelDatabase, false},
		{"database-replay", tenancy.ModelDatabase, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			pv, err := provision.New(provision.Config{Catalog: bundle.Platform.Catalog, Model: model, Key: key,
				AppRole: bundle.AppRole, NoTemplate: c.noTemplate})
			if err != nil {
				b.Fatal(err)
			}
			create := func() time.Duration {
				start := time.Now()
				tn, err := pv.Create(ctx, &provision.CreateOpts{Slug: pgtest.UniqueName("bp-"), Model: c.model, Server: bundle.ServerNames[0]})
				elapsed := time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				bundle.Track(tn)
				return elapsed
			}
			warmup := create()
			b.ResetTimer()
			for range b.N {
				times := make([]time.Duration, *benchTenants)
				for i := range times {
					times[i] = create()
				}
				slices.Sort(times)
				b.ReportMetric(ms(times[len(times)/2]), "median-ms")
				b.ReportMetric(ms(times[len(times)*9/10]), "p90-ms")
				b.ReportMetric(ms(warmup), "first-ms")
			}
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
