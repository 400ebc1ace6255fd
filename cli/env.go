package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/internal/pgcluster"
	"github.com/tenancyhq/tenancy/platform"
)

// common are the flags every command shares.
type common struct {
	databaseURL string
	dataDir     string
	migrations  string
	json        bool
	retention   time.Duration          // how long deleted tenants are kept; 0: the default
	limits      bool                   // enforce tenants' plans (the serving commands)
	redis       *platform.LimitsConfig // with limits: Redis-backed request budgets; nil: each node's own
	maxConns    int                    // the router's budget per server; 0: the default
}

func (m *Main) flags(name string, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.StringVar(&c.databaseURL, "database-url", m.Getenv("TENANCY_DATABASE_URL"), "the catalog database")
	fs.StringVar(&c.dataDir, "data-dir", m.Getenv("TENANCY_DATA_DIR"), "the embedded PostgreSQL's data directory")
	fs.StringVar(&c.migrations, "migrations", "", "the tenant data model's migrations directory")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	return fs
}

// parse parses flags that may come after positional arguments
// ("tenants show acme --json").
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// defaultDataDir is where the embedded PostgreSQL keeps its data between runs.
// When running as root the cluster runs as the postgres user, which cannot
// enter root's home directory, so it lives under /var/tmp instead.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/tmp/tenancy/postgres"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "tenancy", "postgres")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tenancy-%d", os.Getuid()), "postgres")
}

// embedded starts (or reuses) the embedded PostgreSQL and returns the URLs of
// its catalog database and its shared data database, creating them if needed.
func (m *Main) embedded(ctx context.Context, c *common) (catalogURL, dataURL string, err error) {
	dir := c.dataDir
	if dir == "" {
		dir = defaultDataDir()
	}
	// The cluster may run as another OS user (postgres, when we are root): it
	// must be able to enter the parent directory.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", "", err
	}
	fmt.Fprintf(m.Stderr, "starting the embedded PostgreSQL in %s ...\n", dir)
	start := time.Now()
	// The catalog records servers by URL, so the embedded cluster keeps the
	// port it was first given.
	portFile := dir + ".port"
	port := 0
	if b, err := os.ReadFile(portFile); err == nil {
		port, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	cl, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Port: port})
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(portFile, []byte(strconv.Itoa(cl.Port())+"\n"), 0o644); err != nil {
		return "", "", err
	}
	m.closers = append(m.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cl.Stop(sctx)
	})
	fmt.Fprintf(m.Stderr, "PostgreSQL is up on 127.0.0.1:%d (%s)\n", cl.Port(), time.Since(start).Round(time.Millisecond))
	conn, err := pgx.Connect(ctx, cl.URL("postgres"))
	if err != nil {
		return "", "", err
	}
	defer conn.Close(ctx)
	for _, db := range []string{"tenancy_catalog", "tenancy_data"} {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil {
			return "", "", err
		}
		if !exists {
			if _, err := conn.Exec(ctx, "CREATE DATABASE "+dataplane.Ident(db)); err != nil {
				return "", "", err
			}
		}
	}
	return cl.URL("tenancy_catalog"), cl.URL("tenancy_data"), nil
}

// open opens the platform on the configured catalog, or on the embedded
// PostgreSQL. dataURL is the embedded shared database, "" otherwise.
func (m *Main) open(ctx context.Context, c *common) (p *platform.Platform, dataURL string, err error) {
	catalogURL := c.databaseURL
	if catalogURL == "" {
		catalogURL, dataURL, err = m.embedded(ctx, c)
		if err != nil {
			return nil, "", err
		}
	}
	model := m.DataModel
	if model == nil {
		model = crm.Migrations()
	}
	if c.migrations != "" {
		if st, err := os.Stat(c.migrations); err != nil || !st.IsDir() {
			return nil, "", errors.New("--migrations must name a directory of NNN_name.sql files")
		}
		model = os.DirFS(c.migrations)
	}
	cfg := platform.Config{CatalogURL: catalogURL, DataModel: model, Retention: c.retention, AppPassword: m.Getenv("TENANCY_APP_PASSWORD"),
		MaxConnsPerServer: c.maxConns}
	if k := m.Getenv("TENANCY_SECRET_KEY"); k != "" {
		if cfg.SecretKey, err = catalog.ParseSecretKey(k); err != nil {
			return nil, "", fmt.Errorf("TENANCY_SECRET_KEY: %w", err)
		}
		if k := m.Getenv("TENANCY_SECRET_KEY_PREVIOUS"); k != "" {
			prev, err := catalog.ParseSecretKey(k)
			if err != nil {
				return nil, "", fmt.Errorf("TENANCY_SECRET_KEY_PREVIOUS: %w", err)
			}
			cfg.PreviousSecretKeys = [][]byte{prev}
		}
	}
	if m.tracer == nil {
		if m.tracer, err = m.tracerProvider(ctx); err != nil {
			return nil, "", err
		}
	}
	cfg.TracerProvider = m.tracer
	if c.limits {
		// Each tenant's plan: requests per second per node, concurrent
		// transactions, statement timeout.
		cfg.Limits = &platform.LimitsConfig{}
		if c.redis != nil {
			cfg.Limits = c.redis
		}
	}
	p, err = platform.Open(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	m.closers = append(m.closers, p.Close)
	return p, dataURL, nil
}
