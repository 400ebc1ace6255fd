package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/serve"
)

// serveFlags are the flags of demo and serve.
type serveFlags struct {
	addr          string
	operatorToken string
	redisURL      string // shared request budgets; "": each node its own
	redisFail     string // open or closed
	maxConns      int    // the router's connection budget per server
	// fallbackPort: if addr is taken, listen on a free port of its host.
	fallbackPort bool
}

func (m *Main) serveFlags(fs *flag.FlagSet, sf *serveFlags, addr string) {
	fs.StringVar(&sf.addr, "addr", addr, "the address to listen on")
	fs.StringVar(&sf.operatorToken, "operator-token", m.Getenv("TENANCY_OPERATOR_TOKEN"),
		"the token of the control API and the dashboard (default: $TENANCY_OPERATOR_TOKEN)")
	fs.StringVar(&sf.redisURL, "redis", m.Getenv("TENANCY_REDIS_URL"),
		"redis:// URL where every app node keeps the tenants' request budgets (default: $TENANCY_REDIS_URL; none: each node its own)")
	fs.StringVar(&sf.redisFail, "redis-fail", "open", "while Redis is unavailable: open (each node's own budget) or closed (503)")
	fs.IntVar(&sf.maxConns, "max-conns", 50, "this node's connection budget per PostgreSQL server, across its databases")
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// runServe runs "tenancy serve": the server, without sample data.
func (m *Main) runServe(ctx context.Context, args []string) error {
	var c common
	var sf serveFlags
	fs := m.flags("serve", &c)
	m.serveFlags(fs, &sf, "127.0.0.1:8080")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return m.usageError("serve [--addr HOST:PORT] [--operator-token T]")
	}
	if sf.operatorToken != "" && len(sf.operatorToken) < 16 {
		return tenancy.Errorf(tenancy.CodeInvalid, "the shared operator token must be at least 16 characters (--operator-token or TENANCY_OPERATOR_TOKEN)")
	}
	c.limits = true
	if c.redis, err = m.redisLimits(&sf); err != nil {
		return err
	}
	if c.maxConns = sf.maxConns; c.maxConns < 1 {
		return tenancy.Errorf(tenancy.CodeInvalid, "--max-conns must be at least 1, got %d", sf.maxConns)
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	if sf.operatorToken == "" {
		if err := anyOperator(ctx, p.Catalog); err != nil {
			return err
		}
	}
	return m.serve(ctx, p, nil, &sf, false)
}

// redisLimits returns the Redis-backed request limits that sf asks for, or
// nil for each node's own. The client gives up on an unavailable Redis
// quickly (see ratelimit.RedisConfig.Client); Close closes it.
func (m *Main) redisLimits(sf *serveFlags) (*platform.LimitsConfig, error) {
	if sf.redisFail != "open" && sf.redisFail != "closed" {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "--redis-fail must be open or closed, got %q", sf.redisFail)
	}
	if sf.redisURL == "" {
		return nil, nil
	}
	opts, err := redis.ParseURL(sf.redisURL)
	if err != nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "--redis (or TENANCY_REDIS_URL) must be a redis:// URL: %v", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	opts.MaxRetries, opts.DialerRetries = 1, 1
	client := redis.NewClient(opts)
	m.closers = append(m.closers, func() { _ = client.Close() })
	return &platform.LimitsConfig{Redis: client, FailClosed: sf.redisFail == "closed"}, nil
}

// anyOperator fails unless the catalog has an operator who is not revoked:
// without a shared token, nobody else could open the control API.
func anyOperator(ctx context.Context, cat *catalog.Catalog) error {
	ops, err := cat.Operators(ctx)
	if err != nil {
		return err
	}
	for _, o := range ops {
		if o.RevokedAt == nil {
			return nil
		}
	}
	return tenancy.Errorf(tenancy.CodeInvalid, "serve needs an operator: add one with `tenancy operators add NAME` (its token opens the control API "+
		"and the dashboard), or give a shared operator token of at least 16 characters (--operator-token or TENANCY_OPERATOR_TOKEN)")
}

// serve runs the server until ctx is done. With demo, it prints how to try it.
func (m *Main) serve(ctx context.Context, p *platform.Platform, acc *accounts.Accounts, sf *serveFlags, demo bool) error {
	logger := slog.New(slog.NewTextHandler(m.Stderr, nil))
	if demo && sf.operatorToken == "" {
		sf.operatorToken = "op_" + rand.Text() // the demo prints it
	}
	// Background jobs (the CRM's CSV imports) run in this process, on River
	// in the catalog database.
	workers := river.NewWorkers()
	crm.AddWorkers(workers, p)
	jc, err := jobs.Open(ctx, p, &jobs.Config{Workers: workers, Logger: logger.With("component", "jobs")})
	if err != nil {
		return err
	}
	if err := jc.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := jc.Stop(sctx); err != nil {
			logger.Warn("stop background jobs", "error", err)
		}
	}()
	app, err := crm.New(ctx, p, &crm.Config{Accounts: acc, Jobs: jc, Logger: logger})
	if err != nil {
		return err
	}
	srv, err := serve.New(serve.Config{Platform: p, App: app, OperatorToken: sf.operatorToken, Logger: logger, TracerProvider: m.tracer})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", sf.addr)
	if err != nil && sf.fallbackPort {
		host, _, _ := net.SplitHostPort(sf.addr)
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sf.addr, err)
	}
	base := "http://" + ln.Addr().String()
	if demo {
		acme, err := p.Catalog.TenantBySlug(ctx, "acme")
		if err != nil {
			return err
		}
		m.printDemoHelp(base, sf.operatorToken, acme.Model)
	} else {
		fmt.Fprintf(m.Stdout, "tenancy is serving on %s (app /, control API /control/v1, dashboard /admin/)\n", base)
	}
	err = srv.Serve(ctx, ln)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	fmt.Fprintln(m.Stderr, "stopped")
	return err
}

// printDemoHelp prints the URLs and curl lines that work as printed; the
// tests run them. The lines move acme, whose model is acmeModel now, to the
// next model (shared → schema → database → shared): the demo keeps its data
// from one run to the next.
func (m *Main) printDemoHelp(base, opToken string, acmeModel tenancy.Model) {
	curl := "curl -sS --fail-with-body"
	suffix := demoSuffix()
	auth := `-H "Authorization: Bearer $TOKEN"`
	op := `-H "Authorization: Bearer ` + opToken + `"`
	json := `-H 'Content-Type: application/json'`
	next := tenancy.Models[(slices.Index(tenancy.Models, acmeModel)+1)%len(tenancy.Models)]
	lines := []string{
		fmt.Sprintf(`TOKEN=$(%s %s -d '{"email":"%s","password":"%s"}' %s/login | sed -E 's/.*"token":"([^"]+)".*/\1/')`,
			curl, json, demoEmail, demoPassword, base),
		fmt.Sprintf(`%s %s %s/t/acme/contacts`, curl, auth, base),
		fmt.Sprintf(`for t in acme globex initech; do %s %s %s -d '{"name":"Marie Curie","email":"marie.%s@'$t'.example"}' %s/t/$t/contacts; echo; done`,
			curl, auth, json, suffix, base),
		fmt.Sprintf(`%s %s '%s/t/initech/deals?stage=qualified'`, curl, auth, base),
		fmt.Sprintf(`printf 'name,email\nAnn Lee,ann.%s@acme.example\n' | %s %s --data-binary @- %s/t/acme/contacts/import`, suffix, curl, auth, base),
		fmt.Sprintf(`%s %s '%s/t/globex/audit?table=contacts'`, curl, auth, base),
		fmt.Sprintf(`%s %s %s/control/v1/tenants`, curl, op, base),
		fmt.Sprintf(`OP=$(%s %s %s -d '{"model":"%s"}' %s/control/v1/tenants/acme/move | sed -E 's/.*"id":"([^"]+)".*/\1/')   # acme moves, online, from %s to %s`,
			curl, op, json, next, base, acmeModel, next),
		fmt.Sprintf(`sleep 2; %s %s %s/control/v1/operations/$OP   # the move's progress; acme answers all along`, curl, op, base),
		fmt.Sprintf(`%s %s %s/t/acme/contacts`, curl, auth, base),
	}
	fmt.Fprintf(m.Stdout, `
tenancy demo is serving on %[1]s (loopback only)
  the example CRM        %[1]s/t/{acme,globex,initech}/contacts   (log in as %[2]s / %[3]s)
  the control API        %[1]s/control/v1/tenants   (OpenAPI: %[1]s/control/openapi.json)
  the admin dashboard    %[1]s/admin/#token=%[4]s
  metrics, health        %[1]s/metrics  %[1]s/healthz

Try:
  %[5]s

Press Ctrl-C to stop.
`, base, demoEmail, demoPassword, opToken, strings.Join(lines, "\n  "))
}
