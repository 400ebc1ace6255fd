package bench

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgtest"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

var (
	compare = flag.Bool("compare", false, "run the full comparison (otherwise a smoke round)")
	rounds  = flag.Int("rounds", 10, "interleaved rounds of the comparison")
	ops     = flag.Int("ops", 300, "transactions per side, statement and round")
	out     = flag.String("out", "", "directory to write the report (report.md, ratios.png) into; empty: log only")
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The workload: the example CRM's typical statements.
var statements = []string{"read", "list", "insert", "update"}

// Seed sizes per tenant.
const (
	seedContacts = 50
	seedDeals    = 200
	listLimit    = 20
)

var stages = []string{"lead", "qualified", "won", "lost"}

// tenantData is one tenant with the ids the workload uses.
type tenantData struct {
	tn       *tenancy.Tenant
	ctx      context.Context // carries tn
	contacts []int64
	deals    []int64
	dbURL    string // superuser URL of the database holding tn's rows
}

var seq atomic.Int64

func email() string { return "c" + strconv.FormatInt(seq.Add(1), 10) + "@bench.test" }

// pick returns one of ids.
func pick(ids []int64) int64 { return ids[rand.IntN(len(ids))] }

// seed gives tn contacts and deals through the router.
func seed(t testing.TB, b *tenanttest.Bundle, tn *tenancy.Tenant) *tenantData {
	t.Helper()
	d := &tenantData{tn: tn, ctx: tenancy.WithTenant(context.Background(), tn),
		dbURL: b.Server(tn.Placement.Server).URL(tn.Placement.Database)}
	err := b.Platform.Router.Tx(d.ctx, func(tx pgx.Tx) error {
		ctx := context.Background()
		var company int64
		if err := tx.QueryRow(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, 'bench inc') RETURNING id`, tn.ID).Scan(&company); err != nil {
			return err
		}
		for range seedContacts {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO contacts (tenant_id, company_id, name, email) VALUES ($1, $2, 'someone', $3) RETURNING id`,
				tn.ID, company, email()).Scan(&id); err != nil {
				return err
			}
			d.contacts = append(d.contacts, id)
		}
		for i := range seedDeals {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO deals (tenant_id, contact_id, title, amount, stage) VALUES ($1, $2, 'deal', $3, $4) RETURNING id`,
				tn.ID, d.contacts[i%len(d.contacts)], i*10, stages[i%len(stages)]).Scan(&id); err != nil {
				return err
			}
			d.deals = append(d.deals, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed %s tenant: %v", tn.Model, err)
	}
	return d
}

// sqlFor returns the workload's SQL with the tables as qualify names them.
func sqlFor(qualify func(table string) string) map[string]string {
	return map[string]string{
		"read":   `SELECT name, email FROM ` + qualify("contacts") + ` WHERE tenant_id = $1 AND id = $2`,
		"list":   `SELECT id, title, amount::text FROM ` + qualify("deals") + ` WHERE tenant_id = $1 AND stage = $2 ORDER BY id LIMIT ` + strconv.Itoa(listLimit),
		"insert": `INSERT INTO ` + qualify("contacts") + ` (tenant_id, name, email) VALUES ($1, 'someone', $2)`,
		"update": `UPDATE ` + qualify("deals") + ` SET amount = amount + 1 WHERE tenant_id = $1 AND id = $2`,
	}
}

// runPgx runs one statement of the workload on a pgx transaction.
func runPgx(ctx context.Context, tx pgx.Tx, d *tenantData, stmt, sqlText string) error {
	switch stmt {
	case "read":
		var name, email string
		return tx.QueryRow(ctx, sqlText, d.tn.ID, pick(d.contacts)).Scan(&name, &email)
	case "list":
		rows, err := tx.Query(ctx, sqlText, d.tn.ID, stages[rand.IntN(len(stages))])
		if err != nil {
			return err
		}
		var n int
		for rows.Next() {
			var id int64
			var title, amount string
			if err := rows.Scan(&id, &title, &amount); err != nil {
				rows.Close()
				return err
			}
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("list: no rows")
		}
		return nil
	case "insert":
		_, err := tx.Exec(ctx, sqlText, d.tn.ID, email())
		return err
	case "update":
		tag, err := tx.Exec(ctx, sqlText, d.tn.ID, pick(d.deals))
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("update: %d rows", tag.RowsAffected())
		}
		return err
	}
	return fmt.Errorf("unknown statement %q", stmt)
}

// runSQL runs one statement of the workload through database/sql.
func runSQL(ctx context.Context, tx *sql.Tx, d *tenantData, stmt, sqlText string) error {
	switch stmt {
	case "read":
		var name, email string
		return tx.QueryRowContext(ctx, sqlText, d.tn.ID, pick(d.contacts)).Scan(&name, &email)
	case "list":
		rows, err := tx.QueryContext(ctx, sqlText, d.tn.ID, stages[rand.IntN(len(stages))])
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var title, amount string
			if err := rows.Scan(&id, &title, &amount); err != nil {
				return err
			}
		}
		return rows.Err()
	case "insert":
		_, err := tx.ExecContext(ctx, sqlText, d.tn.ID, email())
		return err
	case "update":
		_, err := tx.ExecContext(ctx, sqlText, d.tn.ID, pick(d.deals))
		return err
	}
	return fmt.Errorf("unknown statement %q", stmt)
}

// GORM models of the CRM tables; composite primary keys as in the data model.
type gormContact struct {
	TenantID string `gorm:"primaryKey;type:uuid"`
	ID       int64  `gorm:"primaryKey;autoIncrement"`
	Name     string
	Email    string
}

func (gormContact) TableName() string { return "contacts" }

type gormDeal struct {
	TenantID string `gorm:"primaryKey;type:uuid"`
	ID       int64  `gorm:"primaryKey;autoIncrement"`
	Title    string
	Amount   string
}

func (gormDeal) TableName() string { return "deals" }

// runGorm runs one statement of the workload through GORM.
func runGorm(tx *gorm.DB, d *tenantData, stmt string) error {
	tid := d.tn.ID.String()
	switch stmt {
	case "read":
		var c gormContact
		return tx.Select("name", "email").Where("tenant_id = ? AND id = ?", tid, pick(d.contacts)).Take(&c).Error
	case "list":
		var ds []gormDeal
		return tx.Select("id", "title", "amount").Where("tenant_id = ? AND stage = ?", tid, stages[rand.IntN(len(stages))]).
			Order("id").Limit(listLimit).Find(&ds).Error
	case "insert":
		return tx.Create(&gormContact{TenantID: tid, Name: "someone", Email: email()}).Error
	case "update":
		return tx.Model(&gormDeal{}).Where("tenant_id = ? AND id = ?", tid, pick(d.deals)).
			Update("amount", gorm.Expr("amount + 1")).Error
	}
	return fmt.Errorf("unknown statement %q", stmt)
}

// side is one way of running the workload for one tenant.
type side struct {
	name  string
	model tenancy.Model
	limit bool // raw pgx: the reference of its model
	run   func(ctx context.Context, stmt string) error
}

// comparison is the platform and the sides under test.
type comparison struct {
	sides []*side
}

func setupComparison(t *testing.T) *comparison {
	t.Helper()
	homeRole := pgtest.UniqueName("home")
	var b *tenanttest.Bundle
	// Registered first, so that it runs once the databases are dropped.
	t.Cleanup(func() {
		if b == nil {
			return
		}
		conn, err := pgx.Connect(context.Background(), b.Servers[0].URL("postgres"))
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+homeRole)
	})
	b = tenanttest.Setup(t, &tenanttest.Opts{PerModel: 1, MaxConnsPerServer: 8})
	r := b.Platform.Router
	c := &comparison{}
	for _, tn := range b.Tenants {
		d := seed(t, b, tn)
		schema := tn.Placement.Schema
		qualified := sqlFor(func(table string) string { return dataplane.Ident(schema, table) })
		plain := sqlFor(func(table string) string { return table })

		// The limit: raw pgx, superuser, hand-written WHERE tenant_id.
		pool, err := pgxpool.New(context.Background(), d.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		c.sides = append(c.sides, &side{name: "raw pgx (the limit)", model: tn.Model, limit: true,
			run: func(ctx context.Context, stmt string) error {
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return runPgx(ctx, tx, d, stmt, qualified[stmt]) })
			}})
		c.sides = append(c.sides, &side{name: "tenancy router", model: tn.Model,
			run: func(ctx context.Context, stmt string) error {
				return r.Tx(d.ctx, func(tx pgx.Tx) error { return runPgx(ctx, tx, d, stmt, plain[stmt]) })
			}})

		switch tn.Model {
		case tenancy.ModelShared:
			// database/sql with a session-level SET, the usual home-made
			// shared-table approach: copies of the tables with a plain RLS
			// policy on the setting, an application role of their own, and on
			// each request the tenant set on a pooled connection, then the
			// statement in a transaction.
			homeURL := homemade(t, d.dbURL, homeRole)
			db, err := sql.Open("pgx", homeURL)
			if err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(8)
			db.SetMaxIdleConns(8)
			t.Cleanup(func() { db.Close() })
			home := sqlFor(func(table string) string { return "homemade." + table })
			c.sides = append(c.sides, &side{name: "database/sql + session SET app.tenant_id + plain RLS", model: tn.Model,
				run: func(ctx context.Context, stmt string) error {
					conn, err := db.Conn(ctx)
					if err != nil {
						return err
					}
					defer conn.Close()
					if _, err := conn.ExecContext(ctx, `SELECT set_config('app.tenant_id', $1, false)`, tn.ID.String()); err != nil {
						return err
					}
					tx, err := conn.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					if err := runSQL(ctx, tx, d, stmt, home[stmt]); err != nil {
						_ = tx.Rollback()
						return err
					}
					return tx.Commit()
				}})
		case tenancy.ModelSchema:
			// GORM with a hand-rolled per-request search_path switch, the
			// usual home-made schema-per-tenant approach.
			gdb, err := gorm.Open(postgres.Open(d.dbURL), &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true})
			if err != nil {
				t.Fatal(err)
			}
			sqlDB, err := gdb.DB()
			if err != nil {
				t.Fatal(err)
			}
			sqlDB.SetMaxOpenConns(8)
			sqlDB.SetMaxIdleConns(8)
			t.Cleanup(func() { sqlDB.Close() })
			setPath := "SET search_path TO " + dataplane.Ident(schema)
			c.sides = append(c.sides, &side{name: "GORM + per-request SET search_path", model: tn.Model,
				run: func(ctx context.Context, stmt string) error {
					return gdb.WithContext(ctx).Connection(func(conn *gorm.DB) error {
						if err := conn.Exec(setPath).Error; err != nil {
							return err
						}
						return conn.Transaction(func(tx *gorm.DB) error { return runGorm(tx, d, stmt) })
					})
				}})
		}
	}
	return c
}

// homemade copies the shared CRM tables, with their rows, into schema
// homemade of the database at dbURL, protects them the way a team would by
// hand (RLS forced, a policy on current_setting('app.tenant_id'), a role that
// owns nothing), and returns the URL of that role.
func homemade(t *testing.T, dbURL, role string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{
		"CREATE SCHEMA homemade",
		"CREATE ROLE " + role + " LOGIN",
		"GRANT CONNECT ON DATABASE " + dataplane.Ident(cfg.Database) + " TO " + role,
		"GRANT USAGE ON SCHEMA homemade TO " + role,
	}
	for _, table := range []string{"contacts", "deals"} {
		ht := "homemade." + table
		stmts = append(stmts,
			"CREATE TABLE "+ht+" (LIKE shared."+table+" INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)",
			"INSERT INTO "+ht+" OVERRIDING SYSTEM VALUE SELECT * FROM shared."+table,
			"SELECT setval(pg_get_serial_sequence('"+ht+"', 'id'), (SELECT max(id) FROM "+ht+"))",
			"ALTER TABLE "+ht+" ENABLE ROW LEVEL SECURITY",
			"ALTER TABLE "+ht+" FORCE ROW LEVEL SECURITY",
			"CREATE POLICY tenant ON "+ht+" USING (tenant_id = current_setting('app.tenant_id')::uuid) WITH CHECK (tenant_id = current_setting('app.tenant_id')::uuid)",
			"GRANT SELECT, INSERT, UPDATE ON "+ht+" TO "+role,
		)
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("home-made tables: %s: %v", q, err)
		}
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, cfg.Database)
}

// result is the ns/op of every side and statement in every round.
type result struct {
	sides  []*side
	nsOp   map[*side]map[string][]float64 // per round
	ratios map[*side]map[string][]float64 // to the limit of the side's model, per round
}

func (c *comparison) run(t *testing.T, rounds, ops int) *result {
	t.Helper()
	ctx := context.Background()
	res := &result{sides: c.sides, nsOp: map[*side]map[string][]float64{}, ratios: map[*side]map[string][]float64{}}
	for _, s := range c.sides {
		res.nsOp[s], res.ratios[s] = map[string][]float64{}, map[string][]float64{}
		for _, stmt := range statements { // warm up: connections, prepared statements
			for range 20 {
				if err := s.run(ctx, stmt); err != nil {
					t.Fatalf("%s %s %s: %v", s.model, s.name, stmt, err)
				}
			}
		}
	}
	// Interleaved one transaction at a time, in an order that rotates, so a
	// slow moment of the machine hits every side alike; each round's median
	// per side is compared with its model's limit in the same round.
	order := slices.Clone(c.sides)
	for range rounds {
		for _, stmt := range statements {
			lat := map[*side][]float64{}
			for i := range ops {
				if i%len(order) == 0 {
					rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				}
				for _, s := range order {
					start := time.Now()
					if err := s.run(ctx, stmt); err != nil {
						t.Fatalf("%s %s %s: %v", s.model, s.name, stmt, err)
					}
					lat[s] = append(lat[s], float64(time.Since(start).Nanoseconds()))
				}
				slices.Reverse(order)
			}
			for _, s := range c.sides {
				res.nsOp[s][stmt] = append(res.nsOp[s][stmt], median(lat[s]))
				for _, l := range c.sides {
					if l.limit && l.model == s.model {
						res.ratios[s][stmt] = append(res.ratios[s][stmt], median(lat[s])/median(lat[l]))
					}
				}
			}
		}
	}
	return res
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestCompare runs the comparison: a smoke round by default, the full run with
// -compare. With -out it writes report.md and ratios.png there.
func TestCompare(t *testing.T) {
	if !*compare {
		t.Parallel() // the smoke rounds run side by side; measurements one at a time
	}
	r, n := 1, 5
	if *compare {
		r, n = *rounds, *ops
	}
	c := setupComparison(t)
	start := time.Now()
	res := c.run(t, r, n)
	elapsed := time.Since(start)
	md := res.markdown(r, n, elapsed)
	t.Log("\n" + md)
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(*out, "report.md"), []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writeRatiosPNG(filepath.Join(*out, "ratios.png"), res); err != nil {
			t.Fatal(err)
		}
	}
}
