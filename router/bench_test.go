package router_test

// Router overhead benchmarks: the same one-row statement through Router.Tx and
// through raw pgx in an explicit transaction, in every isolation model. The
// raw side is the limit: a superuser connection to the database holding the
// tenant's rows, BEGIN, the statement with a hand-written WHERE tenant_id = $1
// on the table the tenant uses (shared.contacts, the tenant's schema, the
// tenant's database), COMMIT. Both sides make three round trips: the router
// sends BEGIN and its settings in one.
//
//	go test -run '^$' -bench . -benchtime 3000x -count 5 ./router/
//
// BenchmarkServerCPU also reports the PostgreSQL backend's own CPU time per
// transaction (server-ns/op), which moves less than ns/op with the load of the
// machine (on a virtual machine it still counts time the hypervisor steals).
//
// docs/PERFORMANCE.md records the results.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

const (
	benchMaxConns = 4  // the router's budget per server, and the raw pool's size
	benchWarmup   = 50 // transactions run on each side before the timer starts
)

// benchSeq makes inserted e-mail addresses unique across sub-benchmarks and
// their repeated runs ((tenant_id, email) is unique).
var benchSeq atomic.Int64

// benchPgBouncer puts PgBouncer in transaction mode between the router and the
// server (the raw sides still connect directly):
//
//	go test -run '^$' -bench BenchmarkInterleaved -benchtime 2000x ./router/ -args -pgbouncer
var benchPgBouncer = flag.Bool("pgbouncer", false, "route the router's connections through a private PgBouncer in transaction mode")

func benchEmail() string {
	return "b" + strconv.FormatInt(benchSeq.Add(1), 10) + "@example.test"
}

// beginner is a raw *pgx.Conn or *pgxpool.Pool.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// benchTenant is one tenant of a model with what both sides need.
type benchTenant struct {
	tn      *tenancy.Tenant
	ctx     context.Context // carries tn, for the router
	conn    *pgx.Conn       // raw: superuser, on the database holding tn's rows
	pool    *pgxpool.Pool   // raw, for the parallel variants: benchMaxConns superuser connections
	contact int64           // id of one of tn's contacts
	// The statements for raw, with tn's table schema-qualified (the
	// superuser's search_path does not name tenant schemas).
	rawSelect, rawInsert string
}

// The statements the router runs: its search_path finds the tenant's table.
const (
	routerSelect = `SELECT name, email FROM contacts WHERE tenant_id = $1 AND id = $2`
	routerInsert = `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, $2, $3)`
)

// setupBench opens a platform with one tenant of each model, seeds each with a
// company and a contact, and connects raw to each tenant's database.
func setupBench(b *testing.B) (*tenanttest.Bundle, []*benchTenant) {
	b.Helper()
	bundle := tenanttest.Setup(b, &tenanttest.Opts{PerModel: 1, MaxConnsPerServer: benchMaxConns, PgBouncer: *benchPgBouncer})
	var out []*benchTenant
	for _, tn := range bundle.Tenants {
		table := dataplane.Ident(tn.Placement.Schema, "contacts")
		bt := &benchTenant{
			tn:        tn,
			ctx:       tenanttest.Ctx(tn),
			conn:      bundle.AdminConn(b, tn),
			rawSelect: `SELECT name, email FROM ` + table + ` WHERE tenant_id = $1 AND id = $2`,
			rawInsert: `INSERT INTO ` + table + ` (tenant_id, name, email) VALUES ($1, $2, $3)`,
		}
		cfg, err := pgxpool.ParseConfig(bundle.Server(tn.Placement.Server).URL(tn.Placement.Database))
		if err != nil {
			b.Fatal(err)
		}
		cfg.MaxConns = benchMaxConns
		if bt.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(bt.pool.Close)
		err = bundle.Platform.Router.Tx(bt.ctx, func(tx pgx.Tx) error {
			ctx := context.Background()
			var company int64
			if err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'bench inc') RETURNING id`, tn.ID).Scan(&company); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `INSERT INTO contacts (tenant_id, company_id, name, email) VALUES ($1, $2, 'bench person', 'bench@example.test') RETURNING id`,
				tn.ID, company).Scan(&bt.contact)
		})
		if err != nil {
			b.Fatalf("seed %s tenant: %v", tn.Model, err)
		}
		out = append(out, bt)
	}
	return bundle, out
}

// statement is the benchmarked work inside one transaction.
type statement func(ctx context.Context, tx pgx.Tx, bt *benchTenant, sql string) error

func pointSelect(ctx context.Context, tx pgx.Tx, bt *benchTenant, sql string) error {
	var name, email string
	return tx.QueryRow(ctx, sql, bt.tn.ID, bt.contact).Scan(&name, &email)
}

func insert(ctx context.Context, tx pgx.Tx, bt *benchTenant, sql string) error {
	_, err := tx.Exec(ctx, sql, bt.tn.ID, "bench person", benchEmail())
	return err
}

// rawTx runs stmt the way a hand-written application would: BEGIN, the
// statement, COMMIT.
func rawTx(ctx context.Context, db beginner, bt *benchTenant, stmt statement, sql string) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	if err := stmt(ctx, tx, bt, sql); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	return tx.Commit(ctx)
}

// rawPipeTx is rawTx with BEGIN sent in one pipeline with the statement, as
// the router does with its settings: two round trips instead of three. It is
// the limit for a router that pipelines.
func rawPipeTx(ctx context.Context, db *pgx.Conn, bt *benchTenant, stmt statement, sql string) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if err := stmt(ctx, &pipeTx{b: b}, bt, sql); err != nil {
		return err
	}
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		_, _ = db.Exec(ctx, "ROLLBACK")
		return err
	}
	_, err := db.Exec(ctx, "COMMIT")
	return err
}

// pipeTx queues a statement's Exec and QueryRow into a batch; a QueryRow's
// Scan happens when the batch is read.
type pipeTx struct {
	pgx.Tx
	b *pgx.Batch
}

func (p *pipeTx) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (p *pipeTx) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	return pipeRow{p.b.Queue(sql, args...)}
}

type pipeRow struct{ q *pgx.QueuedQuery }

func (r pipeRow) Scan(dest ...any) error {
	r.q.QueryRow(func(row pgx.Row) error { return row.Scan(dest...) })
	return nil
}

// side is one way of running a transaction of the benchmark for a tenant.
type side struct {
	name string
	run  func(bt *benchTenant) error
}

func sides(bundle *tenanttest.Bundle, stmt statement, rawSQL func(*benchTenant) string, routerSQL string, parallel bool) []side {
	r := bundle.Platform.Router
	return []side{
		{"raw", func(bt *benchTenant) error {
			var db beginner = bt.conn
			if parallel {
				db = bt.pool
			}
			return rawTx(context.Background(), db, bt, stmt, rawSQL(bt))
		}},
		{"rawpipe", func(bt *benchTenant) error {
			ctx := context.Background()
			if !parallel {
				return rawPipeTx(ctx, bt.conn, bt, stmt, rawSQL(bt))
			}
			return bt.pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
				return rawPipeTx(ctx, c.Conn(), bt, stmt, rawSQL(bt))
			})
		}},
		{"router", func(bt *benchTenant) error {
			return r.Tx(bt.ctx, func(tx pgx.Tx) error { return stmt(context.Background(), tx, bt, routerSQL) })
		}},
	}
}

// benchModels runs, for each model, the raw limit and then the router. Serial
// runs measure per-transaction latency; parallel runs keep benchMaxConns
// transactions in flight on both sides.
func benchModels(b *testing.B, stmt statement, rawSQL func(*benchTenant) string, routerSQL string, parallel bool) {
	bundle, tenants := setupBench(b)
	for _, bt := range tenants {
		for _, s := range sides(bundle, stmt, rawSQL, routerSQL, parallel) {
			b.Run(s.name+"-"+string(bt.tn.Model), func(b *testing.B) {
				warm(b, s, bt, parallel)
				b.ReportAllocs()
				b.ResetTimer()
				if !parallel {
					for i := 0; i < b.N; i++ {
						if err := s.run(bt); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(max(1, benchMaxConns/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.run(bt); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// warm prepares the statements, fills the pools and the tenant cache: with
// benchMaxConns goroutines in the parallel case, so that every connection has
// the statement prepared.
func warm(b *testing.B, s side, bt *benchTenant, parallel bool) {
	b.Helper()
	workers := 1
	if parallel {
		workers = benchMaxConns
	}
	errs := make(chan error, workers)
	for range workers {
		go func() {
			for range benchWarmup {
				if err := s.run(bt); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			b.Fatalf("warm up: %v", err)
		}
	}
}

func selectSQL(bt *benchTenant) string { return bt.rawSelect }
func insertSQL(bt *benchTenant) string { return bt.rawInsert }

// BenchmarkPointSelect reads one contact by primary key, one transaction at a time.
func BenchmarkPointSelect(b *testing.B) {
	benchModels(b, pointSelect, selectSQL, routerSelect, false)
}

// BenchmarkInsert inserts one contact, one transaction at a time.
func BenchmarkInsert(b *testing.B) {
	benchModels(b, insert, insertSQL, routerInsert, false)
}

// BenchmarkPointSelectParallel is BenchmarkPointSelect with benchMaxConns
// transactions in flight.
func BenchmarkPointSelectParallel(b *testing.B) {
	benchModels(b, pointSelect, selectSQL, routerSelect, true)
}

// BenchmarkInsertParallel is BenchmarkInsert with benchMaxConns transactions
// in flight.
func BenchmarkInsertParallel(b *testing.B) {
	benchModels(b, insert, insertSQL, routerInsert, true)
}

// BenchmarkInterleaved runs the sides in turn, one transaction each per
// iteration (rotating which goes first), and reports the median latency of
// each side and the ratios of the router's median to the raw ones. On a noisy
// machine this compares like with like: a slow second hits all three sides
// alike, where separate benchmarks minutes apart do not.
func BenchmarkInterleaved(b *testing.B) {
	bundle, tenants := setupBench(b)
	for _, w := range []struct {
		name   string
		stmt   statement
		rawSQL func(*benchTenant) string
		sql    string
	}{
		{"select", pointSelect, selectSQL, routerSelect},
		{"insert", insert, insertSQL, routerInsert},
	} {
		for _, bt := range tenants {
			ss := sides(bundle, w.stmt, w.rawSQL, w.sql, false)
			b.Run(w.name+"-"+string(bt.tn.Model), func(b *testing.B) {
				for _, s := range ss {
					warm(b, s, bt, false)
				}
				lat := make([][]time.Duration, len(ss))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j := range ss {
						k := (i + j) % len(ss)
						start := time.Now()
						if err := ss[k].run(bt); err != nil {
							b.Fatal(err)
						}
						lat[k] = append(lat[k], time.Since(start))
					}
				}
				b.StopTimer()
				med := make(map[string]float64, len(ss))
				for k, s := range ss {
					slices.Sort(lat[k])
					med[s.name] = float64(lat[k][len(lat[k])/2].Nanoseconds())
					b.ReportMetric(med[s.name]/1e3, s.name+"-µs")
				}
				b.ReportMetric(med["router"]/med["raw"], "router/raw")
				b.ReportMetric(med["router"]/med["rawpipe"], "router/rawpipe")
			})
		}
	}
}

// BenchmarkServerCPU runs an empty transaction, the point select and the
// insert, raw and through the router, one at a time, and reports the CPU time
// the serving backend spent per transaction (server-ns/op), read from
// /proc/<pid>/schedstat. It is skipped when the server's backends are not
// processes of this machine.
func BenchmarkServerCPU(b *testing.B) {
	bundle, tenants := setupBench(b)
	r := bundle.Platform.Router
	ctx := context.Background()
	for _, bt := range tenants {
		rawPID := func() uint32 { return bt.conn.PgConn().PID() }
		routerPID := func() uint32 {
			var pid uint32
			if err := r.Tx(bt.ctx, func(tx pgx.Tx) error { pid = tx.Conn().PgConn().PID(); return nil }); err != nil {
				b.Fatal(err)
			}
			return pid
		}
		for _, w := range []struct {
			name              string
			stmt              statement
			rawSQL, routerSQL string
		}{
			{"empty", nil, "", ""},
			{"select", pointSelect, bt.rawSelect, routerSelect},
			{"insert", insert, bt.rawInsert, routerInsert},
		} {
			raw := func() error {
				tx, err := bt.conn.Begin(ctx)
				if err != nil {
					return err
				}
				if w.stmt != nil {
					if err := w.stmt(ctx, tx, bt, w.rawSQL); err != nil {
						_ = tx.Rollback(ctx)
						return err
					}
				}
				return tx.Commit(ctx)
			}
			routed := func() error {
				return r.Tx(bt.ctx, func(tx pgx.Tx) error {
					if w.stmt == nil {
						return nil
					}
					return w.stmt(ctx, tx, bt, w.routerSQL)
				})
			}
			for _, s := range []struct {
				name string
				pid  func() uint32
				run  func() error
			}{{"raw", rawPID, raw}, {"router", routerPID, routed}} {
				b.Run(s.name+"-"+string(bt.tn.Model)+"-"+w.name, func(b *testing.B) {
					for range benchWarmup {
						if err := s.run(); err != nil {
							b.Fatal(err)
						}
					}
					pid := s.pid()
					start, err := backendCPU(pid)
					if err != nil {
						b.Skipf("no CPU time for backend %d: %v", pid, err)
					}
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := s.run(); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					end, err := backendCPU(pid)
					if err != nil {
						b.Fatal(err)
					}
					// Serial transactions reuse the one idle connection: the
					// backend must not have changed under the loop.
					if now := s.pid(); now != pid {
						b.Fatalf("the transactions moved from backend %d to %d", pid, now)
					}
					b.ReportMetric(float64(end-start)/float64(b.N), "server-ns/op")
				})
			}
		}
	}
}

// backendCPU is the CPU time, in nanoseconds, that the local PostgreSQL
// backend pid has run.
func backendCPU(pid uint32) (int64, error) {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(string(comm), "postgres") {
		return 0, fmt.Errorf("process %d is %q, not a local PostgreSQL backend", pid, strings.TrimSpace(string(comm)))
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(st))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty /proc/%d/schedstat", pid)
	}
	return strconv.ParseInt(f[0], 10, 64)
}
