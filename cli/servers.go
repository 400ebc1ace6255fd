package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/tenancyhq/tenancy"
)

func (m *Main) runServers(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errUsage
	}
	if args[0] == "drain" { // see move.go
		return m.runServersDrain(ctx, args[1:])
	}
	if args[0] == "encrypt" {
		return m.runServersEncrypt(ctx, args[1:])
	}
	var c common
	var dsn, appDSN, region string
	var capacity int
	fs := m.flags("servers "+args[0], &c)
	fs.StringVar(&dsn, "dsn", "", "administrative postgres:// URL of the server's shared database")
	fs.StringVar(&appDSN, "app-dsn", "", "the URL the application role connects with, e.g. through PgBouncer (default: --dsn as the application role, with $TENANCY_APP_PASSWORD)")
	fs.StringVar(&region, "region", "", "region, for placement")
	fs.IntVar(&capacity, "capacity", 1000, "how many tenants to place on it")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "add":
		if len(pos) != 1 || dsn == "" {
			return m.usageError("servers add NAME --dsn URL [--app-dsn URL] [--region R] [--capacity N]")
		}
		s := &tenancy.Server{Name: pos[0], DSN: dsn, AppDSN: appDSN, Region: region, Capacity: capacity}
		if err := tenancy.ValidateName("server name", s.Name); err != nil {
			return err
		}
		p, _, err := m.open(ctx, &c)
		if err != nil {
			return err
		}
		if err := p.AddServer(ctx, s); err != nil {
			return err
		}
		return m.printServers(c.json, s)
	case "list":
		p, _, err := m.open(ctx, &c)
		if err != nil {
			return err
		}
		ss, err := p.Catalog.Servers(ctx)
		if err != nil {
			return err
		}
		return m.printServers(c.json, ss...)
	}
	return m.usageError("servers add|list|drain|encrypt")
}

// runServersEncrypt encrypts the DSNs stored in clear with TENANCY_SECRET_KEY.
func (m *Main) runServersEncrypt(ctx context.Context, args []string) error {
	var c common
	fs := m.flags("servers encrypt", &c)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return m.usageError("servers encrypt")
	}
	if m.Getenv("TENANCY_SECRET_KEY") == "" {
		return tenancy.Errorf(tenancy.CodeInvalid, "servers encrypt needs TENANCY_SECRET_KEY: 32 bytes in hex or base64 (`openssl rand -hex 32` makes one); keep it apart from the catalog")
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	n, err := p.Catalog.EncryptServers(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "%d servers' DSNs encrypted with TENANCY_SECRET_KEY, which every process of this installation now needs\n", n)
	return nil
}

func (m *Main) printServers(asJSON bool, ss ...*tenancy.Server) error {
	if asJSON {
		return writeJSON(m.Stdout, ss)
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tREGION\tCAPACITY")
	for _, s := range ss {
		fmt.Fprintf(w, "%s\t%s\t%d\n", s.Name, s.Region, s.Capacity)
	}
	return w.Flush()
}
