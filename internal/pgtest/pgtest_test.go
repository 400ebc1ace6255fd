package pgtest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func databaseExists(t *testing.T, srv *pgtest.Server, name string) bool {
	t.Helper()
	var exists bool
	err := connect(t, srv.URL("postgres")).QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	return exists
}

// accountsSetup is a template setup that counts its calls and, like a real
// migration tool might, leaves a connection open.
func accountsSetup(t *testing.T, calls *atomic.Int32) func(ctx context.Context, url string) error {
	return func(ctx context.Context, url string) error {
		calls.Add(1)
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		t.Cleanup(func() { conn.Close(context.Background()) }) // left open on purpose
		_, err = conn.Exec(ctx, `CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
			INSERT INTO accounts VALUES (1, 'acme')`)
		return err
	}
}

func TestDefaultServer(t *testing.T) {
	t.Parallel()

	srv := pgtest.DefaultServer(t)
	if srv.Name() != "pg1" {
		t.Errorf("Name = %q, want pg1", srv.Name())
	}
	if os.Getenv(pgtest.EnvURL) == "" && strings.Contains(srv.URL("x"), ":5432/") {
		t.Errorf("the private server uses the shared service's port: %s", srv.URL("x"))
	}
	conn := connect(t, srv.URL("postgres"))
	var super bool
	if err := conn.QueryRow(context.Background(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
		t.Fatal(err)
	}
	if !super {
		t.Error("URL is not a superuser's")
	}
	if again := pgtest.DefaultServer(t); again != srv {
		t.Error("DefaultServer returned another server on the second call")
	}
}

func TestNewDatabase(t *testing.T) {
	t.Parallel()

	srv := pgtest.DefaultServer(t)
	var name string
	t.Run("Fresh", func(t *testing.T) {
		name = srv.NewDatabase(t, "")
		conn := connect(t, srv.URL(name))
		var n int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("fresh database has %d tables", n)
		}
		// An open connection must not stop the drop.
	})
	if databaseExists(t, srv, name) {
		t.Errorf("database %s not dropped when its test ended", name)
	}
}

func TestTemplate(t *testing.T) {
	t.Parallel()

	srv := pgtest.DefaultServer(t)
	var calls atomic.Int32
	// Templates are cached per process: a unique name gives each run (with
	// -count) its own.
	name := pgtest.UniqueName("accounts")
	tmpl := srv.Template(t, name, accountsSetup(t, &calls))
	if !strings.HasPrefix(tmpl, "tpl_"+name+"_") {
		t.Errorf("template name = %q", tmpl)
	}

	a, b := srv.NewDatabase(t, tmpl), srv.NewDatabase(t, tmpl)
	connA, connB := connect(t, srv.URL(a)), connect(t, srv.URL(b))
	ctx := context.Background()
	var account string
	if err := connA.QueryRow(ctx, "SELECT name FROM accounts WHERE id = 1").Scan(&account); err != nil {
		t.Fatalf("clone does not see the template's table: %v", err)
	}
	if account != "acme" {
		t.Errorf("account = %q, want acme", account)
	}
	if _, err := connA.Exec(ctx, "INSERT INTO accounts VALUES (2, 'only in a')"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := connB.QueryRow(ctx, "SELECT count(*) FROM accounts").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("second clone has %d rows, want 1: clones share data", n)
	}

	if again := srv.Template(t, name, accountsSetup(t, &calls)); again != tmpl || calls.Load() != 1 {
		t.Errorf("second Template call: name %q (want %q), setup ran %d times (want 1)", again, tmpl, calls.Load())
	}
}

func TestParallelNewDatabase(t *testing.T) {
	t.Parallel()

	srv := pgtest.DefaultServer(t)
	var calls atomic.Int32
	setup := accountsSetup(t, &calls)
	name := pgtest.UniqueName("parallel")
	for i := range 12 {
		t.Run(fmt.Sprintf("DB%d", i), func(t *testing.T) {
			t.Parallel()
			tmpl := srv.Template(t, name, setup)
			db := srv.NewDatabase(t, tmpl)
			var n int
			if err := connect(t, srv.URL(db)).QueryRow(context.Background(), "SELECT count(*) FROM accounts").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("accounts has %d rows, want 1", n)
			}
		})
	}
	t.Cleanup(func() {
		if got := calls.Load(); got != 1 {
			t.Errorf("setup ran %d times for 12 parallel callers, want 1", got)
		}
	})
}

// fatalRecorder is a testing.TB whose Fatalf ends the goroutine and keeps
// the message, to test what must fail.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func expectFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { fn(r) })
	wg.Wait()
	if r.msg == "" {
		t.Fatal("did not fail the test")
	}
	return r.msg
}

func TestTemplateSetupFails(t *testing.T) {
	t.Parallel()

	srv := pgtest.DefaultServer(t)
	var db string
	setup := func(ctx context.Context, url string) error {
		db = url[strings.LastIndex(url, "/")+1:]
		return fmt.Errorf("migration 3 failed")
	}
	name := pgtest.UniqueName("broken")
	msg := expectFatal(t, func(tb testing.TB) { srv.Template(tb, name, setup) })
	if !strings.Contains(msg, "migration 3 failed") {
		t.Errorf("failure = %q, want the setup error", msg)
	}
	if db == "" || databaseExists(t, srv, db) {
		t.Errorf("half-built template %q left behind", db)
	}
	// Later callers fail the same way, without running setup again.
	msg2 := expectFatal(t, func(tb testing.TB) {
		srv.Template(tb, name, func(context.Context, string) error { panic("setup ran twice") })
	})
	if msg2 != msg {
		t.Errorf("second failure = %q, want %q", msg2, msg)
	}

	if msg := expectFatal(t, func(tb testing.TB) { srv.Template(tb, "Bad Name", setup) }); !strings.Contains(msg, "template name") {
		t.Errorf("bad name failure = %q", msg)
	}
	if msg := expectFatal(t, func(tb testing.TB) { srv.NewDatabase(tb, "no_such_template") }); !strings.Contains(msg, "no_such_template") {
		t.Errorf("missing template failure = %q", msg)
	}
}

func TestServers(t *testing.T) {
	t.Parallel()

	servers := pgtest.Servers(t, 2)
	if servers[0].Name() != "pg1" || servers[1].Name() != "pg2" {
		t.Errorf("names = %s, %s; want pg1, pg2", servers[0].Name(), servers[1].Name())
	}
	if os.Getenv(pgtest.EnvURL) == "" && os.Getenv(pgtest.EnvURLs) == "" {
		if servers[0].URL("postgres") == servers[1].URL("postgres") {
			t.Fatalf("both private servers at %s", servers[0].URL("postgres"))
		}
		if servers[0] != pgtest.DefaultServer(t) {
			t.Error("Servers(t, 2)[0] is not DefaultServer")
		}
	}
	again := pgtest.Servers(t, 2)
	if again[0] != servers[0] || again[1] != servers[1] {
		t.Error("a second Servers call started new servers")
	}

	// A database created on one server is not on the other.
	db := servers[1].NewDatabase(t, "")
	if os.Getenv(pgtest.EnvURL) == "" && databaseExists(t, servers[0], db) {
		t.Errorf("database %s of pg2 visible on pg1", db)
	}
	if !databaseExists(t, servers[1], db) {
		t.Errorf("database %s missing on pg2", db)
	}

	if msg := expectFatal(t, func(tb testing.TB) { pgtest.Servers(tb, 0) }); !strings.Contains(msg, "at least one") {
		t.Errorf("Servers(0) failure = %q", msg)
	}
}

func TestUniqueName(t *testing.T) {
	t.Parallel()

	seen := make(map[string]bool)
	pattern := regexp.MustCompile(`^role[a-z2-7]{10}$`)
	for range 10000 {
		n := pgtest.UniqueName("role")
		if !pattern.MatchString(n) {
			t.Fatalf("UniqueName(role) = %q", n)
		}
		if seen[n] {
			t.Fatalf("UniqueName repeated %q", n)
		}
		seen[n] = true
	}
	if n := pgtest.UniqueName("acme-"); !regexp.MustCompile(`^acme-[a-z2-7]{10}$`).MatchString(n) {
		t.Errorf("UniqueName(acme-) = %q", n)
	}
	// A plain prefix gives a valid tenant slug.
	for _, prefix := range []string{"sh", "acme-"} {
		if n := pgtest.UniqueName(prefix); tenancy.ValidateSlug(n) != nil {
			t.Errorf("UniqueName(%q) = %q: %v", prefix, n, tenancy.ValidateSlug(n))
		}
	}
	for _, bad := range []string{"", "Role", "1x", "a b", `x"`} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("UniqueName(%q) did not panic", bad)
				}
			}()
			pgtest.UniqueName(bad)
		}()
	}

	// Usable as a role name, without quoting.
	srv := pgtest.DefaultServer(t)
	role := pgtest.UniqueName("role")
	conn := connect(t, srv.URL("postgres"))
	if _, err := conn.Exec(context.Background(), "CREATE ROLE "+role+"; DROP ROLE "+role); err != nil {
		t.Fatal(err)
	}
}

// TestSharedURL runs this test binary against a server given by
// TENANCY_TEST_DATABASE_URL and checks that it builds nothing private there
// and leaves nothing behind.
func TestSharedURL(t *testing.T) {
	if os.Getenv("PGTEST_SHARED_URL_HELPER") != "" {
		t.Skip("already the helper")
	}
	t.Parallel()

	srv := pgtest.DefaultServer(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSharedURLHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "PGTEST_SHARED_URL_HELPER=1", pgtest.EnvURL+"="+srv.URL("postgres"), pgtest.EnvURLs+"=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var pid int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if _, err := fmt.Sscanf(strings.TrimSpace(sc.Text()), "helper pid %d", &pid); err == nil {
			break
		}
	}
	if pid == 0 {
		t.Fatalf("helper did not report its pid:\n%s", out)
	}
	var left []string
	rows, err := connect(t, srv.URL("postgres")).Query(context.Background(),
		"SELECT datname FROM pg_database WHERE datname LIKE $1", fmt.Sprintf("tpl\\_%%\\_%d", pid))
	if err != nil {
		t.Fatal(err)
	}
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("templates left on the shared server: %v", left)
	}
}

func TestSharedURLHelper(t *testing.T) {
	if os.Getenv("PGTEST_SHARED_URL_HELPER") == "" {
		t.Skip("helper process for TestSharedURL")
	}
	fmt.Printf("helper pid %d\n", os.Getpid())
	want := os.Getenv(pgtest.EnvURL)
	srv := pgtest.DefaultServer(t)
	if got := srv.URL("postgres"); got != want {
		t.Errorf("DefaultServer URL = %q, want %q", got, want)
	}
	servers := pgtest.Servers(t, 2)
	if servers[0].Name() != "pg1" || servers[1].Name() != "pg2" || servers[1].URL("x") != srv.URL("x") {
		t.Errorf("Servers on one URL: %s %s %s", servers[0].Name(), servers[1].Name(), servers[1].URL("x"))
	}
	var calls atomic.Int32
	tmpl := srv.Template(t, "shared", accountsSetup(t, &calls))
	// The alias shares the template: setup does not run again.
	if servers[1].Template(t, "shared", accountsSetup(t, &calls)) != tmpl || calls.Load() != 1 {
		t.Errorf("template rebuilt for an alias of the same server")
	}
	db := servers[1].NewDatabase(t, tmpl)
	var n int
	if err := connect(t, srv.URL(db)).QueryRow(context.Background(), "SELECT count(*) FROM accounts").Scan(&n); err != nil || n != 1 {
		t.Errorf("count = %d, %v", n, err)
	}
}
