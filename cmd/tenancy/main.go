// Command tenancy runs and administers a tenancy installation, with the
// example CRM's data model (or the one --migrations names).
//
//	tenancy demo                      start an embedded PostgreSQL, sample tenants and data, and serve them
//	tenancy serve                     serve the application, the control API and the dashboard
//	tenancy servers add|list|drain    the servers of the data plane
//	tenancy tenants …                 the tenants: create, list, show, suspend, resume, delete, restore, purge,
//	                                  move, export, import
//	tenancy migrate up|status         the tenant data model on every target of the fleet
//	tenancy audit list|verify         a tenant's audit log, and its hash chain
//
// `tenancy help` prints every command and flag. The command set is the cli
// package, for binaries of one's own.
package main

import (
	"os"

	"github.com/tenancyhq/tenancy/cli"
)

func main() { os.Exit(cli.Exec(&cli.Main{}, os.Args[1:])) }
