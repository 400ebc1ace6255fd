package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/internal/pgcluster"
)

// Environment variables that point the harness at existing servers.
const (
	// EnvURL is a superuser URL used by Server instead of a private cluster.
	EnvURL = "TENANCY_TEST_DATABASE_URL"
	// EnvURLs lists space-separated superuser URLs of distinct servers for
	// Servers.
	EnvURLs = "TENANCY_TEST_DATABASE_URLS"
)

const (
	// startTimeout bounds the start of a private cluster.
	startTimeout = 2 * time.Minute
	// sqlTimeout bounds one administrative statement.
	sqlTimeout = time.Minute
	// setupTimeout bounds a Template's setup function.
	setupTimeout = 10 * time.Minute
)

// Server is a PostgreSQL server that tests may create databases on. Its
// methods are safe for concurrent use.
type Server struct {
	name string
	// maint is the superuser URL of the maintenance database, from which
	// databases are created and dropped.
	maint *url.URL
	host  *host
}

// host is one PostgreSQL server, which several Server values may share when
// Servers aliases one URL.
type host struct {
	shared bool // on a server the harness did not start: clean up after us
	// admin runs the host's own clean-up statements.
	admin *Server

	mu        sync.Mutex
	templates map[string]*template
}

type template struct {
	once sync.Once
	db   string
	err  error
}

// state is everything this process started or built.
var state struct {
	mu       sync.Mutex
	clusters []*pgcluster.Cluster // started by this process
	private  map[int]*privateSlot // private cluster servers by index
	fromEnv  map[string]*Server   // env URL servers by name + URL
	hosts    map[string]*host     // by server address
}

type privateSlot struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs the tests, then stops every cluster this process started and
// drops the templates it built on shared servers, and exits with the tests'
// status (or 1 when the clean-up fails). Call it from TestMain. It does not
// run goleak; a package that wants both checks leaks in its tests.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	defer func() {
		if err := shutdown(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: clean-up: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()
	return m.Run()
}

// shutdown drops templates on shared servers and stops private clusters.
func shutdown() error {
	state.mu.Lock()
	clusters := state.clusters
	hosts := state.hosts
	state.clusters, state.private, state.fromEnv, state.hosts = nil, nil, nil, nil
	state.mu.Unlock()

	var errs []error
	for _, h := range hosts {
		if h.shared {
			errs = append(errs, h.dropTemplates())
		}
	}
	var wg sync.WaitGroup
	stopErrs := make([]error, len(clusters))
	for i, c := range clusters {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stopErrs[i] = c.Stop(ctx)
		})
	}
	wg.Wait()
	return errors.Join(append(errs, stopErrs...)...)
}

// DefaultServer returns the package's shared server: the
// TENANCY_TEST_DATABASE_URL server when that is set, else the first of
// Servers. A private cluster is started once per test binary, by the first
// caller. Failing to get a server (for instance missing PostgreSQL binaries)
// fails the test.
//
// (It cannot be called Server: that is the name of the type.)
func DefaultServer(tb testing.TB) *Server {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		s, err := envServer("pg1", u)
		if err != nil {
			tb.Fatalf("pgtest: %s: %v", EnvURL, err)
		}
		return s
	}
	return Servers(tb, 1)[0]
}

// Servers returns n servers named pg1 … pgn for tests that span servers:
// the first n of TENANCY_TEST_DATABASE_URLS when that is set (failing the
// test when it lists fewer), else the TENANCY_TEST_DATABASE_URL server n
// times under n names when that is set, else n private clusters. Private
// clusters are started once per process, in parallel, and later calls reuse
// them by index, so Servers(tb, 1)[0] is DefaultServer(tb) without the URLs.
func Servers(tb testing.TB, n int) []*Server {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("pgtest: Servers(%d): want at least one server", n)
	}
	servers := make([]*Server, n)
	if list := strings.Fields(os.Getenv(EnvURLs)); len(list) > 0 {
		if len(list) < n {
			tb.Fatalf("pgtest: the test needs %d distinct servers but %s lists %d", n, EnvURLs, len(list))
		}
		for i := range servers {
			s, err := envServer(serverName(i), list[i])
			if err != nil {
				tb.Fatalf("pgtest: %s: %v", EnvURLs, err)
			}
			servers[i] = s
		}
		return servers
	}
	if u := os.Getenv(EnvURL); u != "" {
		for i := range servers {
			s, err := envServer(serverName(i), u)
			if err != nil {
				tb.Fatalf("pgtest: %s: %v", EnvURL, err)
			}
			servers[i] = s
		}
		return servers
	}

	state.mu.Lock()
	if state.private == nil {
		state.private = make(map[int]*privateSlot)
	}
	slots := make([]*privateSlot, n)
	for i := range slots {
		if state.private[i] == nil {
			state.private[i] = &privateSlot{}
		}
		slots[i] = state.private[i]
	}
	state.mu.Unlock()

	var wg sync.WaitGroup
	for i, slot := range slots {
		wg.Go(func() { slot.once.Do(func() { slot.srv, slot.err = startPrivate(serverName(i)) }) })
	}
	wg.Wait()
	for i, slot := range slots {
		if slot.err != nil {
			tb.Fatalf("pgtest: start private PostgreSQL server %s: %v", serverName(i), slot.err)
		}
		servers[i] = slot.srv
	}
	return servers
}

func serverName(i int) string { return fmt.Sprintf("pg%d", i+1) }

// startPrivate starts a throwaway cluster for this process.
func startPrivate(name string) (*Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Fast: true})
	if err != nil {
		return nil, err
	}
	maint, err := url.Parse(c.URL("postgres"))
	if err != nil {
		c.Stop(ctx)
		return nil, fmt.Errorf("parse cluster url: %w", err)
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	state.clusters = append(state.clusters, c)
	return &Server{name: name, maint: maint, host: hostFor(c.URL(""), maint, false)}, nil
}

// envServer returns the Server for a URL from the environment, the same
// value for the same name and URL.
func envServer(name, raw string) (*Server, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, fmt.Errorf("want a postgres://user@host:port/db URL, got %q", redact(raw))
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/postgres"
	}
	addr := *u
	addr.Path, addr.RawPath = "", ""

	state.mu.Lock()
	defer state.mu.Unlock()
	key := name + " " + raw
	if s, ok := state.fromEnv[key]; ok {
		return s, nil
	}
	if state.fromEnv == nil {
		state.fromEnv = make(map[string]*Server)
	}
	s := &Server{name: name, maint: u, host: hostFor(addr.String(), u, true)}
	state.fromEnv[key] = s
	return s, nil
}

// hostFor returns the host for a server address, whose maintenance database
// is at maint; state.mu must be held.
func hostFor(addr string, maint *url.URL, shared bool) *host {
	if state.hosts == nil {
		state.hosts = make(map[string]*host)
	}
	h, ok := state.hosts[addr]
	if !ok {
		h = &host{shared: shared, templates: make(map[string]*template)}
		h.admin = &Server{name: addr, maint: maint, host: h}
		state.hosts[addr] = h
	}
	return h
}

// redact hides a password in a URL for error messages.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

// Name returns the server's stable name: pg1, pg2, … in the order of
// Servers.
func (s *Server) Name() string { return s.name }

// URL returns the superuser URL to database db on the server.
func (s *Server) URL(db string) string {
	u := *s.maint
	u.Path, u.RawPath = "/"+db, ""
	return u.String()
}

// NewDatabase creates a fresh, uniquely named database as a copy of the
// template database tmpl (template0 when tmpl is empty), drops it WITH
// (FORCE) when the test ends, and returns its name.
func (s *Server) NewDatabase(tb testing.TB, tmpl string) string {
	tb.Helper()
	if tmpl == "" {
		tmpl = "template0"
	}
	name := UniqueName("test")
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(tmpl)); err != nil {
		tb.Fatalf("pgtest: create database %s from template %s on %s: %v", name, tmpl, s.name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
		defer cancel()
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s on %s: %v", name, s.name, err)
		}
	})
	return name
}

var templateName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// Template builds a template database once per process per server per name,
// and returns its database name, tpl_<name>_<pid>, to pass to NewDatabase.
// The first caller creates the database from template0, calls setup with its
// superuser URL, then closes it to connections and marks it IS_TEMPLATE;
// concurrent callers wait for it. When setup fails, every caller for that
// name fails the same way. setup may leave connections open: they are
// terminated. name must be a lower-case identifier of at most 40 bytes.
func (s *Server) Template(tb testing.TB, name string, setup func(ctx context.Context, url string) error) string {
	tb.Helper()
	if !templateName.MatchString(name) {
		tb.Fatalf("pgtest: template name %q: want a lower-case letter, then up to 39 lower-case letters, digits or underscores", name)
	}
	s.host.mu.Lock()
	t, ok := s.host.templates[name]
	if !ok {
		t = &template{db: fmt.Sprintf("tpl_%s_%d", name, os.Getpid())}
		s.host.templates[name] = t
	}
	s.host.mu.Unlock()
	t.once.Do(func() { t.err = s.buildTemplate(t.db, setup) })
	if t.err != nil {
		tb.Fatalf("pgtest: template %s on %s: %v", name, s.name, t.err)
	}
	return t.db
}

func (s *Server) buildTemplate(db string, setup func(ctx context.Context, url string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	// A database of that name is a leftover of a process with our pid.
	if err := s.dropDatabase(ctx, db); err != nil {
		return err
	}
	if err := s.exec(ctx, "CREATE DATABASE "+ident(db)+" TEMPLATE template0"); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	if err := setup(ctx, s.URL(db)); err != nil {
		if derr := s.dropDatabase(ctx, db); derr != nil {
			return errors.Join(fmt.Errorf("setup: %w", err), derr)
		}
		return fmt.Errorf("setup: %w", err)
	}
	// Closed to connections first, so that none can appear after the
	// terminations; CREATE DATABASE fails while anyone is connected.
	if err := s.exec(ctx, "ALTER DATABASE "+ident(db)+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("mark %s as a template: %w", db, err)
	}
	if err := s.exec(ctx, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", db); err != nil {
		return fmt.Errorf("disconnect setup sessions from %s: %w", db, err)
	}
	return nil
}

// dropDatabase drops db, template or not, if it exists.
func (s *Server) dropDatabase(ctx context.Context, db string) error {
	var exists bool
	if err := s.queryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", []any{db}, &exists); err != nil {
		return fmt.Errorf("look up database %s: %w", db, err)
	}
	if !exists {
		return nil
	}
	if err := s.exec(ctx, "ALTER DATABASE "+ident(db)+" WITH IS_TEMPLATE false"); err != nil {
		return fmt.Errorf("unmark template %s: %w", db, err)
	}
	if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+ident(db)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}

// dropTemplates drops the templates built on the host.
func (h *host) dropTemplates() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, t := range h.templates {
		t.once.Do(func() { t.err = errors.New("harness shut down") }) // never built: nothing to drop
		if t.err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
		errs = append(errs, h.admin.dropDatabase(ctx, t.db))
		cancel()
	}
	return errors.Join(errs...)
}

func (s *Server) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.maint.String())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", s.name, err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func (s *Server) queryRow(ctx context.Context, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, s.maint.String())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", s.name, err)
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// ident quotes an SQL identifier.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

var (
	uniquePrefix   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)
	uniqueEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
)

// UniqueName returns prefix followed directly by 10 random lower-case letters
// and digits (50 random bits): a name unique across processes and machines,
// for databases, roles (which are cluster-wide, and test packages run in
// parallel against one server) and tenant slugs. With a prefix of lower-case
// letters and digits, such as "app", the name is at once a plain SQL
// identifier that needs no quoting and a valid tenant slug; end the prefix
// with "_" or "-" for a visible separator ("app_…" is not a valid slug,
// "app-…" needs quoting in SQL). prefix must be a lower-case letter, then up
// to 39 lower-case letters, digits, "_" or "-"; anything else panics.
func UniqueName(prefix string) string {
	if !uniquePrefix.MatchString(prefix) {
		panic(fmt.Sprintf("pgtest: UniqueName(%q): want a lower-case letter, then up to 39 lower-case letters, digits, _ or -", prefix))
	}
	var b [7]byte
	rand.Read(b[:]) // never fails
	return prefix + uniqueEncoding.EncodeToString(b[:])[:10]
}
