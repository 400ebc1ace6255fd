package pgcluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startCluster starts a cluster and stops it in cleanup.
func startCluster(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return c
}

// keptDir returns a directory under /tmp that the postgres user can reach
// (t.TempDir's parents are 0700), removed after the test.
func keptDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func connect(t *testing.T, c *Cluster, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		t.Fatalf("connect to %s: %v", c.URL(db), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func postmasterPID(t *testing.T, dir string) int {
	t.Helper()
	pf, err := readPIDFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	return pf.pid
}

func processAlive(pid int) bool { return processRunning(pid) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()

	begin := time.Now()
	c := startCluster(t, Config{Fast: true})
	t.Logf("cold start (initdb + start) took %v", time.Since(begin))

	conn := connect(t, c, "postgres")
	if got := queryString(t, conn, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q, want postgres", got)
	}
	for name, want := range map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "300",
		"shared_buffers":     "128MB",
		"listen_addresses":   "127.0.0.1",
		"server_encoding":    "UTF8",
		"lc_collate":         "C",
		"port":               strconv.Itoa(c.Port()),
	} {
		if got := queryString(t, conn, "SELECT current_setting($1)", name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if !strings.HasPrefix(c.URL("a b"), "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(c.URL("a b"), "/a%20b?sslmode=disable") {
		t.Errorf("URL = %q", c.URL("a b"))
	}

	t.Run("RunsAsPostgresWhenRoot", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("not root: the cluster runs as the current user")
		}
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		pid := postmasterPID(t, c.Dir())
		fi, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != pg.Uid {
			t.Errorf("postmaster %d runs as uid %s, want postgres (%s)", pid, uid, pg.Uid)
		}
		fi, err = os.Stat(c.Dir())
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != pg.Uid {
			t.Errorf("data directory owned by uid %s, want postgres (%s)", uid, pg.Uid)
		}
	})
}

func TestStopRemovesTempDir(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	c, err := Start(ctx, Config{Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	dir, pid := c.Dir(), postmasterPID(t, c.Dir())
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory %s still there after Stop: %v", dir, err)
	}
	if processAlive(pid) {
		t.Errorf("postmaster %d still running after Stop", pid)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestReuseDir(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	dir := filepath.Join(keptDir(t), "data") // missing: Start creates it

	c, err := Start(ctx, Config{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, c, "postgres")
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	t.Run("AdoptsRunningServer", func(t *testing.T) {
		again, err := Start(ctx, Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if again.Port() != c.Port() {
			t.Errorf("adopted port = %d, want %d", again.Port(), c.Port())
		}
		if _, err := Start(ctx, Config{Dir: dir, Port: c.Port() + 1}); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("Start with another port on a running dir: err = %v, want already running", err)
		}
	})

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Fatalf("kept data directory lost: %v", err)
	}

	// A stale postmaster.pid whose pid now belongs to another live process of
	// the server's OS user (so pg_ctl status calls it running) must not
	// block the restart.
	sleeper := c.user.command(ctx, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	stale := fmt.Sprintf("%d\n%s\n1700000000\n%d\n/tmp\n127.0.0.1\n  1234  5678\nready   \n", sleeper.Process.Pid, dir, c.Port())
	pidPath := filepath.Join(dir, "postmaster.pid")
	if err := os.WriteFile(pidPath, []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.user.chown(pidPath); err != nil {
		t.Fatal(err)
	}
	if alive, err := c.status(ctx); err != nil || !alive {
		t.Fatalf("pg_ctl status on the stale pid file = %v, %v; want it fooled into running", alive, err)
	}

	c2 := startCluster(t, Config{Dir: dir, Fast: true})
	conn2 := connect(t, c2, "postgres")
	if got := queryString(t, conn2, "SELECT v FROM kept"); got != "hello" {
		t.Errorf("row after restart = %q, want hello", got)
	}
	conn2.Close(ctx)
	if err := c2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Errorf("kept data directory removed by Stop: %v", err)
	}
}

func TestTwoClusters(t *testing.T) {
	t.Parallel()

	ctx := context.Background()
	clusters := make([]*Cluster, 2)
	errs := make(chan error, 2)
	for i := range clusters {
		go func() {
			c, err := Start(ctx, Config{Fast: true})
			clusters[i] = c
			errs <- err
		}()
	}
	for range clusters {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, c := range clusters {
		if c != nil {
			t.Cleanup(func() { c.Stop(ctx) })
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if clusters[0].Port() == clusters[1].Port() {
		t.Fatalf("both clusters on port %d", clusters[0].Port())
	}
	if clusters[0].Dir() == clusters[1].Dir() {
		t.Fatalf("both clusters in %s", clusters[0].Dir())
	}
	for i, c := range clusters {
		conn := connect(t, c, "postgres")
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE only_on_%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	conn := connect(t, clusters[1], "postgres")
	if got := queryString(t, conn, "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'only_on_%'"); got != "only_on_1" {
		t.Errorf("databases on the second cluster = %q, want only_on_1", got)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()

	t.Run("Applied", func(t *testing.T) {
		t.Parallel()
		c := startCluster(t, Config{Fast: true, Settings: map[string]string{
			"max_connections": "50",
			"cluster_name":    `it's "quoted" $HOME`,
		}})
		conn := connect(t, c, "postgres")
		if got := queryString(t, conn, "SHOW max_connections"); got != "50" {
			t.Errorf("max_connections = %q, want 50", got)
		}
		if got := queryString(t, conn, "SHOW cluster_name"); got != `it's "quoted" $HOME` {
			t.Errorf("cluster_name = %q", got)
		}
	})

	t.Run("ManagedRefused", func(t *testing.T) {
		t.Parallel()
		_, err := Start(context.Background(), Config{Settings: map[string]string{"port": "5432"}})
		if err == nil || !strings.Contains(err.Error(), "Config.Port") {
			t.Errorf("err = %v, want a pointer to Config.Port", err)
		}
	})

	t.Run("BadValueShowsLog", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(keptDir(t), "data")
		_, err := Start(context.Background(), Config{Dir: dir, Fast: true, Settings: map[string]string{"shared_buffers": "lots"}})
		if err == nil {
			t.Fatal("Start succeeded with shared_buffers=lots")
		}
		if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
			t.Errorf("error does not carry the server log: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("postmaster.pid left behind: %v", err)
		}
	})
}

func TestLongDirUsesShortSocketDir(t *testing.T) {
	t.Parallel()

	dir := filepath.Join(keptDir(t), strings.Repeat("d", 100))
	c := startCluster(t, Config{Dir: dir, Fast: true})
	conn := connect(t, c, "postgres")
	sock := queryString(t, conn, "SHOW unix_socket_directories")
	if sock == dir || len(sock)+len(socketName) > maxSocketPath {
		t.Errorf("unix_socket_directories = %q for a %d-byte data directory", sock, len(dir))
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory %s left after Stop: %v", sock, err)
	}
}

func TestUnreachableDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root switches to the postgres user")
	}
	private := keptDir(t)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{Dir: filepath.Join(private, "data")})
	if err == nil || !strings.Contains(err.Error(), "not traversable by OS user postgres") {
		t.Errorf("err = %v, want not traversable", err)
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir("")
	if err != nil {
		t.Fatal(err) // the binaries are a requirement of the test suite
	}
	if got, err := FindBinDir(dir); err != nil || got != dir {
		t.Errorf("FindBinDir(%q) = %q, %v", dir, got, err)
	}
	_, err = FindBinDir(t.TempDir())
	if !errors.Is(err, ErrBinariesNotFound) {
		t.Fatalf("FindBinDir(empty dir) = %v, want ErrBinariesNotFound", err)
	}
	const want = "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian package postgresql (apt-get install -y postgresql) or put them on PATH"
	if ErrBinariesNotFound.Error() != want {
		t.Errorf("message = %q", ErrBinariesNotFound)
	}
	if _, err := Start(context.Background(), Config{BinDir: t.TempDir()}); !errors.Is(err, ErrBinariesNotFound) {
		t.Errorf("Start with an empty BinDir = %v, want ErrBinariesNotFound", err)
	}
}

// TestWatchdog kills a process that started a cluster with SIGKILL and checks
// that the server stops and its temporary directory goes.
func TestWatchdog(t *testing.T) {
	t.Parallel()

	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdogHelper$")
	cmd.Env = append(os.Environ(), "PGCLUSTER_WATCHDOG_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "cluster %s %d", &dir, &pid); err == nil {
			break
		}
	}
	if dir == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper did not report its cluster")
	}
	if !processAlive(pid) {
		t.Fatalf("postmaster %d not running", pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the postmaster to stop", func() bool { return !processAlive(pid) })
	waitFor(t, "the data directory to go", func() bool {
		_, err := os.Stat(dir)
		return errors.Is(err, os.ErrNotExist)
	})
}

func TestWatchdogHelper(t *testing.T) {
	if os.Getenv("PGCLUSTER_WATCHDOG_HELPER") != "1" {
		t.Skip("helper process for TestWatchdog")
	}
	c, err := Start(context.Background(), Config{Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("cluster %s %d\n", c.Dir(), postmasterPID(t, c.Dir()))
	time.Sleep(time.Minute) // killed by TestWatchdog
}
