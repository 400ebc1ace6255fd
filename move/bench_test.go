package move_test

// BenchmarkMove moves a shared tenant of 10k, 100k and 1M contacts into its
// own schema on the same server while two writers keep writing, and reports
// the bulk copy's rate and the write pause: the fence's (from asking for the
// fence lock to releasing it), the slowest writer transaction that overlapped
// the fence (waited for it, then ran again at the destination), and the
// slowest writer transaction of the whole move. The
// tenant is built first (not timed), its rows written without triggers, so
// it has data rows but a short audit log. Run it once per size:
//
//	go test -run '^$' -bench BenchmarkMove -benchtime 1x -timeout 30m ./move/
//
// docs/PERFORMANCE.md records the results.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/move"
)

func BenchmarkMove(b *testing.B) {
	for _, rows := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			for range b.N {
				benchMove(b, rows)
			}
		})
	}
}

func benchMove(b *testing.B, rows int) {
	b.StopTimer()
	bundle := tenanttest.Setup(b, nil)
	p := bundle.Platform
	ctx := context.Background()
	tn := bundle.CreateTenant(b, tenancy.ModelShared, bundle.ServerNames[0])
	conn := bundle.AdminConn(b, tn)
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO shared.companies (tenant_id, name, domain) VALUES ($1, 'Acme', 'acme.test')`, tn.ID); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO shared.contacts (tenant_id, company_id, name, email, created_at)
		SELECT $1, (SELECT id FROM shared.companies WHERE tenant_id = $1), 'Person number ' || i || ' of the benchmark',
		       'person' || i || '@benchmark.example.com', now() - i * interval '1 minute'
		FROM generate_series(1, $2::int) i`, tn.ID, rows); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE shared.contacts`); err != nil {
		b.Fatal(err)
	}
	m, err := move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model, Logger: benchLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	tb := &testBundle{Bundle: bundle, mover: m}
	l := startLoad(tb, tn, 2)
	time.Sleep(200 * time.Millisecond)
	b.StartTimer()
	began := time.Now()
	res, err := m.Move(ctx, tn.Slug, &move.Opts{To: tenancy.ModelSchema})
	ended := time.Since(began)
	b.StopTimer()
	time.Sleep(200 * time.Millisecond)
	close(l.stop)
	l.wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	if len(l.errs) > 0 {
		b.Fatalf("%d writes failed, the first: %v", len(l.errs), l.errs[0])
	}
	mb := float64(res.Bytes) / 1e6
	b.ReportMetric(mb/res.Copy.Seconds(), "MB/s")
	b.ReportMetric(float64(res.Pause.Milliseconds()), "pause-ms")
	fenceWrite := l.slowestDuring(res.FencedAt, res.FencedAt.Add(res.Pause))
	b.ReportMetric(float64(fenceWrite.Milliseconds()), "fence-write-ms")
	b.ReportMetric(float64(l.maxWait.Milliseconds()), "slowest-write-ms")
	b.ReportMetric(float64(res.Copy.Milliseconds()), "bulk-ms")
	b.Logf("%d rows, %.1f MB: bulk copy %s (%.1f MB/s), catch-up and fence rows %d, pause %s, slowest of %d writes %s",
		res.Rows, mb, res.Copy.Round(time.Millisecond), mb/res.Copy.Seconds(), res.FenceRows,
		res.Pause.Round(time.Millisecond), l.txs, l.maxWait.Round(time.Millisecond))
	// For scale: the same rows copied inside the server, no client involved.
	t0 := time.Now()
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE scratch (LIKE shared.contacts INCLUDING INDEXES);
		INSERT INTO scratch SELECT * FROM `+res.Tenant.Placement.Schema+`.contacts`); err != nil {
		b.Fatal(err)
	}
	b.Logf("for scale: INSERT … SELECT of the same contacts inside the server took %s", time.Since(t0).Round(time.Millisecond))
	b.Logf("the slowest write started %s after the move began (the move took %s); the slowest write that overlapped the fence took %s",
		l.slowest.Sub(began).Round(time.Millisecond), ended.Round(time.Millisecond), fenceWrite.Round(time.Millisecond))
}

// benchLogger logs the fence's phases (the "move fence released" line) into
// the benchmark's output.
func benchLogger(b *testing.B) *slog.Logger {
	return slog.New(slog.NewTextHandler(benchWriter{b}, nil)).With()
}

type benchWriter struct{ b *testing.B }

func (w benchWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("fence released")) {
		w.b.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
