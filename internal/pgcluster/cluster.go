package pgcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config says where and how to run a cluster. The zero Config is a durable
// cluster in a fresh temporary directory on a free port.
type Config struct {
	// Dir is the data directory. Empty: a fresh temporary directory under
	// /tmp, removed by Stop. Non-empty: created with initdb when missing or
	// empty, reused when it already holds a cluster, and kept by Stop. When
	// a server is already running on it, Start adopts that server (its
	// settings stay as they are) and Stop will stop it.
	Dir string
	// Port to listen on at 127.0.0.1. Zero picks a free port, and picks
	// again (a few times) if another process takes it first. When Start
	// adopts a running server, a non-zero Port must be the one it listens on.
	Port int
	// Fast turns off durability for throwaway clusters: fsync=off,
	// synchronous_commit=off, full_page_writes=off. A crash of the machine
	// (not of PostgreSQL) can then corrupt the cluster.
	Fast bool
	// Settings are extra postgresql.conf settings (name → value), passed to
	// the server as -c options; they override the defaults (max_connections
	// 300, shared_buffers 128MB and the Fast settings). The settings port,
	// listen_addresses and unix_socket_directories are managed by Start and
	// refused here.
	Settings map[string]string
	// BinDir overrides where initdb, pg_ctl and postgres are found (see
	// FindBinDir).
	BinDir string
	// StopWithProcess stops the server (without removing Dir) when this
	// process exits, even by a crash or SIGKILL, through a watchdog child
	// process. A cluster in a temporary directory always does so, and has
	// its directory removed too.
	StopWithProcess bool
}

// Cluster is a running PostgreSQL server. Its methods are safe for
// concurrent use.
type Cluster struct {
	binDir  string
	dir     string
	port    int
	temp    bool   // dir was created by Start and is removed by Stop
	sockDir string // a separate socket directory to remove, if any
	user    osUser
	wd      *watchdog
	// launched is set once Start has run pg_ctl start.
	launched bool

	stopOnce sync.Once
	stopErr  error
}

const (
	// logName is the server log, inside the data directory.
	logName = "postgres.log"
	// maxSocketPath is the longest unix socket path PostgreSQL accepts
	// (sizeof sun_path minus the terminating NUL).
	maxSocketPath = 107
	// socketName is the longest socket file name the server creates.
	socketName = "/.s.PGSQL.65535.lock"
	// portAttempts is how many free ports Start tries when Port is zero.
	portAttempts = 5
	// startTimeout bounds pg_ctl's wait for the server (seconds).
	startTimeout = "60"
)

// managedSettings are set by Start and cannot come from Config.Settings.
var managedSettings = map[string]string{
	"port":                    "Config.Port",
	"listen_addresses":        "127.0.0.1 (fixed)",
	"unix_socket_directories": "the data directory (fixed)",
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// Start creates the cluster when needed, starts the server and waits until
// it accepts connections. On failure nothing is left running and a temporary
// directory is removed; the error carries the end of the server log.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	for name := range cfg.Settings {
		if !settingName.MatchString(name) {
			return nil, fmt.Errorf("start postgresql: invalid setting name %q", name)
		}
		if use, ok := managedSettings[strings.ToLower(name)]; ok {
			return nil, fmt.Errorf("start postgresql: setting %s is managed by pgcluster: use %s", name, use)
		}
	}
	binDir, err := FindBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	u, err := serverOSUser()
	if err != nil {
		return nil, err
	}
	c := &Cluster{binDir: binDir, user: u}
	if err := c.prepareDir(cfg.Dir); err != nil {
		return nil, err
	}
	if err := c.start(ctx, cfg); err != nil {
		c.abandon()
		return nil, err
	}
	return c, nil
}

// prepareDir settles the data directory: a fresh temporary one, or cfg.Dir
// created or checked.
func (c *Cluster) prepareDir(dir string) error {
	if dir == "" {
		// /tmp rather than os.TempDir(): short paths for the sockets, and
		// traversable by the postgres user whatever TMPDIR says.
		d, err := os.MkdirTemp("/tmp", "tenancy-pg-")
		if err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
		c.dir, c.temp = d, true
		if err := c.user.chown(d); err != nil {
			os.RemoveAll(d)
			return err
		}
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	c.dir = abs
	if err := c.user.checkTraversable(abs); err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if c.initialized() {
		return nil
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return fmt.Errorf("read data directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("data directory %s is not empty and holds no PostgreSQL cluster (no PG_VERSION)", abs)
	}
	return c.user.chown(abs)
}

func (c *Cluster) initialized() bool {
	_, err := os.Stat(filepath.Join(c.dir, "PG_VERSION"))
	return err == nil
}

func (c *Cluster) start(ctx context.Context, cfg Config) error {
	if c.initialized() {
		port, running, err := c.runningServer(ctx)
		if err != nil {
			return err
		}
		if running {
			if cfg.Port != 0 && cfg.Port != port {
				return fmt.Errorf("start postgresql: a server is already running on data directory %s at port %d, not %d", c.dir, port, cfg.Port)
			}
			c.port = port
			if cfg.StopWithProcess {
				return c.armWatchdog()
			}
			return nil
		}
	}
	c.chooseSocketDir()
	if c.temp || cfg.StopWithProcess {
		// Armed before anything runs, so that a crash during initdb or
		// start still leaves nothing behind.
		if err := c.armWatchdog(); err != nil {
			return err
		}
	}
	if !c.initialized() {
		if err := c.initdb(ctx, cfg.Fast || c.temp); err != nil {
			return err
		}
	}
	for attempt := 1; ; attempt++ {
		port := cfg.Port
		if port == 0 {
			p, err := freePort()
			if err != nil {
				return err
			}
			port = p
		}
		c.launched = true
		err := c.startServer(ctx, port, cfg)
		if err == nil {
			c.port = port
			return nil
		}
		var pe *portError
		if cfg.Port != 0 || attempt == portAttempts || !errors.As(err, &pe) {
			return err
		}
	}
}

// armWatchdog starts the watchdog, which removes the socket directory and a
// temporary data directory after stopping the server.
func (c *Cluster) armWatchdog() error {
	var remove []string
	if c.sockDir != "" {
		remove = append(remove, c.sockDir)
	}
	if c.temp {
		remove = append(remove, c.dir)
	}
	wd, err := startWatchdog(c.user, filepath.Join(c.binDir, "pg_ctl"), c.dir, remove...)
	if err != nil {
		return err
	}
	c.wd = wd
	return nil
}

func (c *Cluster) initdb(ctx context.Context, noSync bool) error {
	args := []string{"-D", c.dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"}
	if noSync {
		args = append(args, "--no-sync")
	}
	out, err := c.user.command(ctx, filepath.Join(c.binDir, "initdb"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb %s: %w: %s", c.dir, err, lastLines(out, 20))
	}
	return nil
}

// chooseSocketDir uses the data directory for the server's unix socket when
// its path is short enough, and a short temporary directory otherwise. If
// that cannot be created, the server starts without a unix socket: clients
// use TCP anyway.
func (c *Cluster) chooseSocketDir() {
	if len(c.dir)+len(socketName) <= maxSocketPath {
		return
	}
	d, err := os.MkdirTemp("/tmp", "pgs-")
	if err != nil {
		return
	}
	if err := c.user.chown(d); err != nil {
		os.Remove(d)
		return
	}
	c.sockDir = d
}

func (c *Cluster) socketDir() string {
	if c.sockDir != "" {
		return c.sockDir
	}
	if len(c.dir)+len(socketName) > maxSocketPath {
		return "" // no unix socket
	}
	return c.dir
}

// portError is a start failure because the port was taken.
type portError struct{ port int }

func (e *portError) Error() string { return fmt.Sprintf("port %d is in use", e.port) }

var portInUse = regexp.MustCompile(`could not bind|Address already in use|could not create any TCP/IP sockets`)

// startServer runs pg_ctl start and waits for the server to accept
// connections.
func (c *Cluster) startServer(ctx context.Context, port int, cfg Config) error {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": c.socketDir(),
		"max_connections":         "300",
		"shared_buffers":          "128MB",
	}
	if cfg.Fast {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range cfg.Settings {
		settings[k] = v
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	var opts []string
	for _, k := range names {
		// pg_ctl hands -o to /bin/sh, so every word is shell-quoted.
		opts = append(opts, "-c", shellQuote(k+"="+settings[k]))
	}

	logPath := filepath.Join(c.dir, logName)
	var logStart int64
	if fi, err := os.Stat(logPath); err == nil {
		logStart = fi.Size()
	}
	out, err := c.user.command(ctx, filepath.Join(c.binDir, "pg_ctl"), "start", "-w", "-s",
		"-t", startTimeout, "-D", c.dir, "-l", logPath, "-o", strings.Join(opts, " ")).CombinedOutput()
	if err == nil {
		return nil
	}
	tail := readLogFrom(logPath, logStart)
	if portInUse.Match(tail) {
		return &portError{port: port}
	}
	return fmt.Errorf("start postgresql in %s on port %d: %w: %s\nserver log (%s):\n%s",
		c.dir, port, err, bytes.TrimSpace(out), logPath, lastLines(tail, 20))
}

// runningServer reports whether a server is running on the data directory,
// and its port. A postmaster.pid left behind by a server that is gone is
// removed, even when its process id now belongs to another process.
func (c *Cluster) runningServer(ctx context.Context) (port int, running bool, err error) {
	pidPath := filepath.Join(c.dir, "postmaster.pid")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(pidPath); errors.Is(err, os.ErrNotExist) {
			return 0, false, nil
		}
		alive, err := c.status(ctx)
		if err != nil {
			return 0, false, err
		}
		pf, perr := readPIDFile(pidPath)
		if alive && perr == nil && isPostmasterOf(pf.pid, c.dir) {
			switch pf.status {
			case "ready":
				return pf.port, true, nil
			case "":
				if pf.port > 0 && acceptsTCP(pf.port) {
					return pf.port, true, nil
				}
			}
			// Starting or stopping: wait until it settles.
			if time.Now().After(deadline) {
				return 0, false, fmt.Errorf("start postgresql: the server on data directory %s (pid %d) is stuck in state %q", c.dir, pf.pid, pf.status)
			}
			select {
			case <-ctx.Done():
				return 0, false, fmt.Errorf("start postgresql: %w", ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if alive && perr != nil {
			// Being written or removed right now; look again.
			if time.Now().After(deadline) {
				return 0, false, fmt.Errorf("start postgresql: read %s: %w", pidPath, perr)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// Stale: its process is gone, or is not this directory's postmaster.
		if err := os.Remove(pidPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, false, fmt.Errorf("remove stale %s: %w", pidPath, err)
		}
		return 0, false, nil
	}
}

// status runs pg_ctl status: true when it finds a live postmaster process.
func (c *Cluster) status(ctx context.Context) (bool, error) {
	out, err := c.user.command(ctx, filepath.Join(c.binDir, "pg_ctl"), "status", "-D", c.dir).CombinedOutput()
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 { // "no server running"
		return false, nil
	}
	return false, fmt.Errorf("pg_ctl status %s: %w: %s", c.dir, err, bytes.TrimSpace(out))
}

// pidFile is what postmaster.pid says: line 1 the pid, line 4 the port,
// line 8 the status (ready, starting, stopping, standby).
type pidFile struct {
	pid    int
	port   int
	status string
}

func readPIDFile(path string) (pidFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return pidFile{}, err
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 4 {
		return pidFile{}, fmt.Errorf("%s is incomplete", path)
	}
	var pf pidFile
	if pf.pid, err = strconv.Atoi(strings.TrimSpace(lines[0])); err != nil {
		return pidFile{}, fmt.Errorf("%s: pid: %w", path, err)
	}
	if pf.port, err = strconv.Atoi(strings.TrimSpace(lines[3])); err != nil {
		return pidFile{}, fmt.Errorf("%s: port: %w", path, err)
	}
	if len(lines) >= 8 {
		pf.status = strings.TrimSpace(lines[7])
	}
	return pf, nil
}

// isPostmasterOf reports whether process pid runs in dir, as a postmaster
// does. Without /proc it trusts pg_ctl status.
func isPostmasterOf(pid int, dir string) bool {
	if _, err := os.Stat("/proc/self/cwd"); err != nil {
		return true
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return false
	}
	want, err := filepath.EvalSymlinks(dir)
	if err != nil {
		want = dir
	}
	return cwd == want
}

func acceptsTCP(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process may
// take it before the server binds it; Start then tries another.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// abandon cleans up after a failed Start: stops whatever may have started and
// removes what Start created.
func (c *Cluster) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c.wd != nil {
		// The watchdog knows how to stop the server and what to remove.
		_ = c.wd.w.Close()
		_ = c.wd.wait()
		c.wd = nil
		return
	}
	if c.launched {
		_, _ = c.user.command(ctx, filepath.Join(c.binDir, "pg_ctl"), "stop", "-D", c.dir, "-m", "fast", "-w", "-s").CombinedOutput()
	}
	if c.sockDir != "" {
		os.RemoveAll(c.sockDir)
	}
	if c.temp {
		os.RemoveAll(c.dir)
	}
}

// Port returns the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir returns the absolute path of the data directory.
func (c *Cluster) Dir() string { return c.dir }

// LogPath returns the path of the server log, inside the data directory.
// When Start adopted a server that was already running, its log may be
// elsewhere.
func (c *Cluster) LogPath() string { return filepath.Join(c.dir, logName) }

// URL returns a postgres:// URL for the superuser "postgres" to database db on
// 127.0.0.1, with sslmode=disable. The cluster trusts local connections, so
// the URL has no password.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Stop shuts the server down (pg_ctl stop -m fast: open sessions are
// disconnected, no data is lost) and, when Dir was empty in the Config,
// removes the data directory. Calling Stop again returns the first result.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Cluster) stop(ctx context.Context) error {
	pf, pidErr := readPIDFile(filepath.Join(c.dir, "postmaster.pid"))
	out, err := c.user.command(ctx, filepath.Join(c.binDir, "pg_ctl"), "stop", "-D", c.dir, "-m", "fast", "-w", "-s", "-t", startTimeout).CombinedOutput()
	if err != nil {
		if alive, serr := c.status(context.Background()); serr != nil || alive {
			// Still running: leave the directories and the armed watchdog.
			return fmt.Errorf("stop postgresql in %s: %w: %s", c.dir, err, bytes.TrimSpace(out))
		}
	}
	if pidErr == nil {
		// pg_ctl returns when postmaster.pid is gone, a moment before the
		// process exits; wait for it so that nothing outlives Stop.
		waitExit(ctx, pf.pid, 10*time.Second)
	}
	var errs []error
	if c.wd != nil {
		errs = append(errs, c.wd.disarm())
	}
	if c.sockDir != "" {
		if err := os.RemoveAll(c.sockDir); err != nil {
			errs = append(errs, fmt.Errorf("remove socket directory: %w", err))
		}
	}
	if c.temp {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove data directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// waitExit waits up to timeout for process pid to exit.
func waitExit(ctx context.Context, pid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for processRunning(pid) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// processRunning reports whether process pid exists and is not a zombie.
func processRunning(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// shellQuote quotes s as one word for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// readLogFrom returns the log from offset on (the part written by one start
// attempt), or the whole log if it shrank.
func readLogFrom(path string, offset int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return []byte(fmt.Sprintf("(no server log: %v)", err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < offset {
		offset = 0
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	data, _ := io.ReadAll(f)
	return data
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// FreePort asks the kernel for a free port on 127.0.0.1 (see freePort).
func FreePort() (int, error) { return freePort() }
