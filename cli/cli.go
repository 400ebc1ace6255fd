// Package cli is the tenancy binary's command set — demo, serve, servers,
// tenants, migrate, audit — as a library, so that a SaaS team can build its
// own binary around it with its own data model:
//
//	func main() {
//		os.Exit(cli.Exec(&cli.Main{DataModel: myapp.Migrations()}, os.Args[1:]))
//	}
//
// cmd/tenancy is that binary with the example CRM's data model, and
// examples/crm/cmd/crmctl shows the pattern.
//
// Connection settings come from --database-url or TENANCY_DATABASE_URL (the
// catalog database); with neither, the embedded PostgreSQL in --data-dir.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"os/user"
	"syscall"

	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
)

// Exec runs one command of m with args (without the program's name) until
// it finishes or the process is interrupted, reports a failure on m.Stderr,
// and returns the exit status: 0 success, 2 bad usage or input, 3 not found,
// 4 conflict, 1 anything else. Zero fields of m get the process's standard
// output, error and environment.
func Exec(m *Main, args []string) int {
	if m.Stdout == nil {
		m.Stdout = os.Stdout
	}
	if m.Stderr == nil {
		m.Stderr = os.Stderr
	}
	if m.Getenv == nil {
		m.Getenv = os.Getenv
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := m.Run(ctx, args)
	m.Close()
	if err == nil {
		return 0
	}
	if err != errUsage { // a bare errUsage was reported already
		fmt.Fprintln(m.Stderr, "tenancy:", err)
	}
	return exitCode(err)
}

// exitCode tells kinds of failure apart for scripts: 2 bad usage or input,
// 3 not found, 4 conflict, 1 anything else.
func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	switch tenancy.ErrorCode(err) {
	case tenancy.CodeInvalid:
		return 2
	case tenancy.CodeNotFound:
		return 3
	case tenancy.CodeConflict:
		return 4
	}
	return 1
}

var errUsage = errors.New("usage")

const usage = `tenancy — multi-tenant SaaS on PostgreSQL

Usage:
  tenancy demo [--addr A]              start the embedded PostgreSQL (unless TENANCY_DATABASE_URL is set),
                                       create one tenant per isolation model with sample data and a demo
                                       user, serve the example CRM, the control API and the dashboard on
                                       loopback, and print how to try them; Ctrl-C stops
  tenancy serve [--addr A] [--operator-token T] [--redis URL [--redis-fail open|closed]] [--max-conns N]
                                       the same server, without sample data; the control API and dashboard
                                       open to named operators' tokens (tenancy operators add) and to the
                                       shared token T, if given ($TENANCY_OPERATOR_TOKEN); one is needed.
                                       --redis ($TENANCY_REDIS_URL): every node shares each tenant's request
                                       budget there; while it is down, open: each node's own, closed: 503
  tenancy servers add NAME --dsn URL [--app-dsn URL] [--region R] [--capacity N]
                                       --dsn: an administrator's URL; the router connects as the application
                                       role with --app-dsn (e.g. through PgBouncer), else with --dsn's host and
                                       $TENANCY_APP_PASSWORD
  tenancy servers list [--json]
  tenancy servers encrypt              encrypt the servers' DSNs stored in clear with $TENANCY_SECRET_KEY (32
                                       bytes, hex or base64), which every process then needs; with the key set,
                                       servers added are stored encrypted. To rotate: the new key in
                                       $TENANCY_SECRET_KEY, the old one in $TENANCY_SECRET_KEY_PREVIOUS
  tenancy servers drain NAME [--to NAME] [--json]
                                       move every tenant off a server (same model), with progress
  tenancy tenants create SLUG --model shared|schema|database [--name N] [--tier T] [--server S] [--region R] [--json]
                                       re-running it finishes a provisioning that was interrupted
  tenancy tenants list [--status S] [--model M] [--server S] [--json]
  tenancy tenants show SLUG [--json]   the tenant, and its recent operations
  tenancy tenants suspend|resume SLUG [--json]  suspended: requests get 403, data is kept
  tenancy tenants delete SLUG [--json]          soft delete: requests get 410, data is kept
  tenancy tenants restore SLUG [--json]
  tenancy tenants purge SLUG --confirm SLUG [--retention DURATION] [--json]
                                       destroy a deleted tenant's data once its retention (default 720h) has
                                       passed; the catalog keeps a tombstone; re-running finishes a purge
  tenancy tenants continue|rollback SLUG   finish, or undo, an interrupted provisioning (continue: or purge)
  tenancy tenants set-tier SLUG TIER [--json]
  tenancy tenants move SLUG --to shared|schema|database | --tier TIER [--server NAME] [--keep-source] [--json]
                                       move a tenant to another isolation model or server, online; with
                                       --tier, set its tier and move it to the tier's model (free: shared,
                                       pro: schema, enterprise: database)
  tenancy tenants kept SLUG [--drop [--older-than D]] [--json]
                                       the copies that moves with --keep-source left (never served); --drop
                                       removes them (a purge does too); without SLUG, --drop --older-than D
                                       sweeps every tenant: a retention period for kept copies
  tenancy tenants export SLUG [--out FILE]
                                       write an archive of everything the tenant owns (default: stdout)
  tenancy tenants import FILE [--slug S] [--model M] [--server S] [--tier T] [--json]
                                       restore an exported tenant, in any model, at the same data model version
  tenancy migrate up [--canary N | --group G] [--fail-fast] [--parallel N] [--per-server N] [--json]
  tenancy migrate status [--json]      every target's version, pending migrations and drift
  tenancy audit list --tenant SLUG [--since T] [--until T] [--actor A] [--table T] [--row KEY] [--after N] [--limit N] [--json]
  tenancy audit verify --tenant SLUG [--json]
                                       check the tenant's hash-chained audit log; names the first bad entry
  tenancy audit list --control [--tenant SLUG] [--kind K] [--operator O] [--since T] [--until T] [--after N] [--limit N] [--json]
  tenancy audit verify --control [--json]
                                       the control plane's log: tenants created, suspended, deleted, purged,
                                       migrations run…, with the operator ($TENANCY_OPERATOR, else the OS user)
  tenancy plans list [--json]
  tenancy plans set TIER [--rps N --burst N] [--max-tx N] [--statement-timeout D] [--db-time S] [--json]
                                       a tier's limits (flags not given keep their values); every app node
                                       applies a change within moments, without a restart
  tenancy tenants limits SLUG [same flags] [--clear] [--json]
                                       the tenant's limits; the flags override its plan's, --clear drops that
  tenancy operators add NAME [--role admin|viewer] [--json]
  tenancy operators rotate NAME [--json]
                                       a named operator of the control API and its token, shown once (rotate:
                                       a new token, the old one stops working); its actions are recorded as
                                       operator:NAME; a viewer may only read
  tenancy operators revoke NAME [--json]   its token stops working at once
  tenancy operators list [--json]

Common flags:
  --database-url URL   the catalog database (default: $TENANCY_DATABASE_URL, else the embedded PostgreSQL)
  --data-dir DIR       the embedded PostgreSQL's data directory (default: $TENANCY_DATA_DIR, else a per-user directory)
  --migrations DIR     the tenant data model's migrations (default: the example CRM's)
`

// Main is the command set, reusable by end-to-end tests and by other
// binaries.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// DataModel is the tenant data model's migrations (see datamodel.Load);
	// --migrations overrides it. Nil: the example CRM's.
	DataModel fs.FS

	closers []func()
	tracer  trace.TracerProvider // OTLP when configured (see tracing.go), else nil
}

// Close releases what Run opened (connections, the embedded PostgreSQL).
func (m *Main) Close() {
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
	m.closers = nil
}

// Run runs one command. Changes are recorded as made by the actor that ctx
// carries, else by the operator named by $TENANCY_OPERATOR, else the OS user.
func (m *Main) Run(ctx context.Context, args []string) error {
	if _, ok := tenancy.ActorFromContext(ctx); !ok {
		ctx = tenancy.WithActor(ctx, tenancy.Actor{Kind: "operator", ID: m.operator()})
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(m.Stdout, usage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	if len(args) > 1 && args[0] == "tenants" && tenantsCommands[args[1]] != nil { // see move.go
		return tenantsCommands[args[1]](m, ctx, args[2:])
	}
	switch args[0] {
	case "demo":
		return m.runDemo(ctx, args[1:])
	case "serve":
		return m.runServe(ctx, args[1:])
	case "servers":
		return m.runServers(ctx, args[1:])
	case "tenants":
		return m.runTenants(ctx, args[1:])
	case "migrate":
		return m.runMigrate(ctx, args[1:])
	case "audit":
		return m.runAudit(ctx, args[1:])
	case "operators":
		return m.runOperators(ctx, args[1:])
	case "plans":
		return m.runPlans(ctx, args[1:])
	}
	fmt.Fprintf(m.Stderr, "tenancy: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}

// operator names who runs the binary, for the control-plane log.
func (m *Main) operator() string {
	if op := m.Getenv("TENANCY_OPERATOR"); op != "" {
		return op
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}
