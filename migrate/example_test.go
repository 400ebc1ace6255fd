package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/platform"
)

// Example rolls the application's newest migrations out to every tenant: five
// tenants first as a canary, then the rest, eight at a time and at most four
// per server. It needs a PostgreSQL server, so it is compiled but not run;
// TestUpMigratesEveryTarget runs the same path.
func Example() {
	ctx := context.Background()
	p, err := platform.Open(ctx, platform.Config{
		CatalogURL: "postgres://admin@localhost:5432/tenancy_catalog",
		DataModel:  os.DirFS("migrations"), // 001_contacts.sql, 002_deals.sql, 003_labels.sql, ...
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	m, err := p.Migrator(&migrate.Config{Parallel: 8, PerServer: 4})
	if err != nil {
		log.Fatal(err)
	}
	rep, err := m.Up(ctx, &migrate.UpOpts{Canary: 5})
	if errors.Is(err, migrate.ErrFailed) {
		for _, r := range rep.Results {
			if r.Outcome == migrate.Failed {
				fmt.Printf("%s: %v\n", r.Target, r.Err) // rolled back whole; re-run Up once fixed
			}
		}
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d migrated, %d already current in %s\n", rep.Migrated, rep.Current, rep.Elapsed)
}
