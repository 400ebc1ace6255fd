// Command crmctl administers the example CRM's installation: the tenancy
// command set (tenants, migrate, audit, servers, demo, serve) built around the
// CRM's own data model, the way a SaaS team builds its binary:
//
//	crmctl tenants create acme --model schema
//	crmctl migrate up
//
// The only line that is the CRM's own is the data model.
package main

import (
	"os"

	"github.com/tenancyhq/tenancy/cli"
	"github.com/tenancyhq/tenancy/examples/crm"
)

func main() {
	os.Exit(cli.Exec(&cli.Main{DataModel: crm.Migrations()}, os.Args[1:]))
}
