package platform_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// Example opens a platform, adds a server, creates a tenant, works in its
// data and serves it over HTTP. It needs a PostgreSQL server, so it is
// compiled but not run (it has no Output comment); TestHTTP runs the same
// path end to end against a real server.
func Example() {
	ctx := context.Background()
	p, err := platform.Open(ctx, platform.Config{
		CatalogURL: "postgres://admin@localhost:5432/tenancy_catalog",
		DataModel:  crm.Migrations(), // the application's tenant tables, as SQL migrations
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// A server of the data plane, once: AddServer prepares it (application
	// role, shared tables) and records it in the catalog.
	err = p.AddServer(ctx, &tenancy.Server{Name: "pg-1", DSN: "postgres://admin@localhost:5432/tenancy_shared"})
	if err != nil && !errors.Is(err, tenancy.ErrConflict) {
		log.Fatal(err)
	}

	// A tenant in the schema model: its own schema and role on pg-1.
	acme, err := p.CreateTenant(ctx, &provision.CreateOpts{Slug: "acme", Name: "Acme Corp", Model: tenancy.ModelSchema})
	if err != nil {
		log.Fatal(err)
	}

	// Work in the tenant's data: the context says which tenant, the router
	// says where its rows are, and PostgreSQL refuses any other tenant's.
	err = p.Router.Tx(tenancy.WithTenant(ctx, acme), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO companies (tenant_id, name) VALUES ($1, $2)`, acme.ID, "Initech")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	// Serve tenants over HTTP: acme.example.com is tenant "acme". Unknown,
	// suspended or deleted tenants are answered 404, 403 or 410.
	mw, err := httpx.Middleware(httpx.Config{
		Resolver: p.Cache,
		Sources:  []httpx.Source{httpx.FromSubdomain("example.com")},
	})
	if err != nil {
		log.Fatal(err)
	}
	companies := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int
		err := p.Router.Tx(r.Context(), func(tx pgx.Tx) error {
			return tx.QueryRow(r.Context(), `SELECT count(*) FROM companies`).Scan(&n)
		})
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		fmt.Fprintf(w, "%d companies\n", n)
	})
	log.Fatal(http.ListenAndServe(":8080", mw(companies)))
}
