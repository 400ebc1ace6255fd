// Package crm is the example SaaS built on tenancy's public API: a small CRM of
// companies, contacts and deals. Its migrations are the tenant data model that
// the tests and `tenancy demo` use.
package crm

import (
	"embed"
	"io/fs"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns the CRM's tenant data model migrations.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory always exists
	}
	return sub
}
