package audit_test

// BenchmarkAuditOverhead measures what the audit log costs: a one-row INSERT
// and a one-row UPDATE through the router, in each model, on a tenant with the
// audit trigger and on a tenant of the same model with it disabled, in turn
// (one transaction each per iteration), and reports both medians and their
// ratio.
//
//	go test -run '^$' -bench BenchmarkAuditOverhead -benchtime 2000x -count 3 ./audit/
//
// docs/AUDIT.md records the results.

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

func BenchmarkAuditOverhead(b *testing.B) {
	bundle := tenanttest.Setup(b, &tenanttest.Opts{PerModel: 2, MaxConnsPerServer: 4})
	r := bundle.Platform.Router
	ctx := context.Background()
	for _, m := range tenancy.Models {
		var pair []*tenancy.Tenant
		for _, tn := range bundle.Tenants {
			if tn.Model == m {
				pair = append(pair, tn)
			}
		}
		on, off := pair[0], pair[1]
		conn := bundle.AdminConn(b, off)
		for _, table := range []string{"companies"} {
			if _, err := conn.Exec(ctx, `ALTER TABLE `+dataplane.Ident(off.Placement.Schema, table)+` DISABLE TRIGGER tenancy_audit`); err != nil {
				b.Fatal(err)
			}
		}
		if m == tenancy.ModelShared {
			// The shared tables hold both tenants: re-enable for the "on"
			// tenant by keeping the trigger and skipping it for "off" is not
			// possible, so the shared model compares against the trigger
			// disabled for both, run in turn with it enabled.
			off = nil
		}
		ids := map[*tenancy.Tenant]int64{}
		for _, tn := range pair {
			err := r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
				var id int64
				err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'seed') RETURNING id`, tn.ID).Scan(&id)
				ids[tn] = id
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		for _, stmt := range []string{"insert", "update"} {
			run := func(tn *tenancy.Tenant, i int) error {
				return r.Tx(tenancy.WithActor(tenanttest.Ctx(tn), tenancy.Actor{Kind: "user", ID: "bench"}), func(tx pgx.Tx) error {
					var err error
					if stmt == "insert" {
						_, err = tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, tn.ID, fmt.Sprint("c", i))
					} else {
						_, err = tx.Exec(ctx, `UPDATE companies SET name = $2 WHERE id = $1`, ids[tn], fmt.Sprint("n", i))
					}
					return err
				})
			}
			b.Run(stmt+"-"+string(m), func(b *testing.B) {
				if off == nil {
					benchShared(b, conn, on, run)
					return
				}
				var lat [2][]time.Duration
				for i := range 50 {
					_ = run(on, i)
					_ = run(off, i)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j, tn := range []*tenancy.Tenant{on, off} {
						if i%2 == 1 {
							tn = []*tenancy.Tenant{off, on}[j]
						}
						start := time.Now()
						if err := run(tn, i); err != nil {
							b.Fatal(err)
						}
						k := 0
						if tn == off {
							k = 1
						}
						lat[k] = append(lat[k], time.Since(start))
					}
				}
				report(b, lat)
			})
		}
	}
}

// benchShared alternates blocks of transactions with the shared table's audit
// trigger enabled and disabled (one table holds every shared tenant).
func benchShared(b *testing.B, conn *pgx.Conn, tn *tenancy.Tenant, run func(*tenancy.Tenant, int) error) {
	ctx := context.Background()
	table := dataplane.Ident(tn.Placement.Schema, "companies")
	var lat [2][]time.Duration
	const block = 100
	b.ResetTimer()
	for i := 0; i < b.N; i += block {
		for k, verb := range []string{"ENABLE", "DISABLE"} {
			b.StopTimer()
			if _, err := conn.Exec(ctx, `ALTER TABLE `+table+` `+verb+` TRIGGER tenancy_audit`); err != nil {
				b.Fatal(err)
			}
			for j := range 10 {
				_ = run(tn, j)
			}
			b.StartTimer()
			for j := i; j < min(i+block, b.N); j++ {
				start := time.Now()
				if err := run(tn, j); err != nil {
					b.Fatal(err)
				}
				lat[k] = append(lat[k], time.Since(start))
			}
		}
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE `+table+` ENABLE TRIGGER tenancy_audit`); err != nil {
		b.Fatal(err)
	}
	report(b, lat)
}

func report(b *testing.B, lat [2][]time.Duration) {
	var med [2]float64
	for k := range lat {
		slices.Sort(lat[k])
		med[k] = float64(lat[k][len(lat[k])/2].Nanoseconds()) / 1e3
	}
	b.ReportMetric(med[0], "audit-on-µs")
	b.ReportMetric(med[1], "audit-off-µs")
	b.ReportMetric(med[0]/med[1], "on/off")
}
