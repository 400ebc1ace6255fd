package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenancyhq/tenancy/internal/pgcluster"
)

// EnvPgBouncer names the pgbouncer binary to use instead of the one on PATH
// (or in /usr/sbin, where Debian installs it).
const EnvPgBouncer = "TENANCY_TEST_PGBOUNCER"

// pgBouncerLoginRetry is PgBouncer's server_login_retry, in seconds: how long
// it refuses new server logins after one failed. Its default, 15, would keep
// the tests that restart a server waiting that long for it.
const pgBouncerLoginRetry = 1

// PgBouncer starts a private PgBouncer in transaction mode in front of s, on a
// free loopback port, with one server connection per database and role (so
// that every transaction of a database reuses one backend, whichever client
// connection sends it), that lets the given roles in (trust authentication, as
// the private clusters do), and returns the URL of database db through it for
// role user. It stops when the test ends (or when this process dies). A
// missing pgbouncer binary fails the test with what to install.
func (s *Server) PgBouncer(tb testing.TB, user, db string, roles ...string) string {
	tb.Helper()
	bin, err := findPgBouncer()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	host, port := s.maint.Hostname(), s.maint.Port()
	if port == "" {
		port = "5432"
	}
	dir, err := os.MkdirTemp("", "tenancy-pgbouncer-")
	if err != nil {
		tb.Fatalf("pgtest: pgbouncer directory: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	listen, err := pgcluster.FreePort()
	if err != nil {
		tb.Fatalf("pgtest: pgbouncer port: %v", err)
	}
	var users strings.Builder
	for _, r := range append([]string{user}, roles...) {
		fmt.Fprintf(&users, "%q \"\"\n", r)
	}
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 1
server_reset_query =
server_login_retry = %d
logfile = %s
`, host, port, listen, filepath.Join(dir, "users.txt"), pgBouncerLoginRetry, filepath.Join(dir, "pgbouncer.log"))
	for name, body := range map[string]string{"users.txt": users.String(), "pgbouncer.ini": ini} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			tb.Fatalf("pgtest: pgbouncer config: %v", err)
		}
	}
	// pgbouncer refuses to run as root, as PostgreSQL does.
	cmd, err := pgcluster.UnprivilegedCommand(context.Background(), dir, bin, filepath.Join(dir, "pgbouncer.ini"))
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Killed with this process, however it ends.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		tb.Fatalf("pgtest: start pgbouncer: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT) // immediate shutdown
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(listen))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			tb.Fatalf("pgtest: pgbouncer exited (%v): %s%s", err, stderr.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pgtest: pgbouncer did not listen on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: addr, Path: "/" + db}
	return u.String()
}

func findPgBouncer() (string, error) {
	if p := os.Getenv(EnvPgBouncer); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer", nil
	}
	return "", fmt.Errorf("pgbouncer not found: install Debian package pgbouncer (scripts/setup does), or set %s", EnvPgBouncer)
}
