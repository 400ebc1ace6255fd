package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tenancyhq/tenancy/catalog"
)

// runOperators runs "tenancy operators add|list|rotate|revoke": the named
// operators of the control API, each with its own token.
func (m *Main) runOperators(ctx context.Context, args []string) error {
	const use = "operators add NAME [--role admin|viewer] [--json], operators rotate|revoke NAME [--json], operators list [--json]"
	if len(args) == 0 {
		return m.usageError(use)
	}
	var c common
	var role string
	fs := m.flags("operators "+args[0], &c)
	fs.StringVar(&role, "role", catalog.RoleAdmin, "add: admin (everything) or viewer (reads only)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	verb := args[0]
	known := verb == "add" || verb == "rotate" || verb == "revoke" || verb == "list"
	if !known || (verb == "list") != (len(pos) == 0) || len(pos) > 1 || (flagSet(fs, "role") && verb != "add") {
		return m.usageError(use)
	}
	p, _, err := m.open(ctx, &c)
	if err != nil {
		return err
	}
	var o *catalog.Operator
	var token string
	switch verb {
	case "list":
		ops, err := p.Catalog.Operators(ctx)
		if err != nil {
			return err
		}
		return m.printOperators(c.json, ops...)
	case "revoke":
		if o, err = p.Catalog.RevokeOperator(ctx, pos[0]); err != nil {
			return err
		}
		return m.printOperators(c.json, o)
	case "add":
		o, token, err = p.Catalog.AddOperator(ctx, pos[0], role)
	case "rotate":
		o, token, err = p.Catalog.RotateOperator(ctx, pos[0])
	}
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(m.Stdout, struct {
			*catalog.Operator
			Token string `json:"token"`
		}{o, token})
	}
	fmt.Fprintf(m.Stdout, "operator %s: its token, shown this once (the control API records its actions as operator:%s):\n%s\n", o.Name, o.Name, token)
	return nil
}

func (m *Main) printOperators(asJSON bool, ops ...*catalog.Operator) error {
	if asJSON {
		return writeJSON(m.Stdout, ops)
	}
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	w := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tROLE\tPREFIX\tCREATED\tLAST USED\tREVOKED")
	for _, o := range ops {
		fmt.Fprintf(w, "%s\t%s\topk_%s\t%s\t%s\t%s\n", o.Name, o.Role, o.Prefix, at(&o.CreatedAt), at(o.LastUsedAt), at(o.RevokedAt))
	}
	return w.Flush()
}
