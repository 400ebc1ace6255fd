package tenancy

import "time"

// Server is a PostgreSQL server (cluster) of the data plane, as recorded in the catalog.
type Server struct {
	// Name identifies the server in placements; a slug like "pg-eu-1".
	Name string `json:"name"`
	// DSN is the administrative connection URL to the server's shared database:
	// it creates schemas, roles and databases and runs migrations. Never shown.
	DSN string `json:"-"`
	// AppDSN is the URL the router connects with, as the application role. Empty:
	// DSN with the user and password replaced by the platform's application role.
	AppDSN string `json:"-"`
	// Region is where the server runs, for placement (for example "eu-west").
	Region string `json:"region"`
	// Capacity is how many tenants the placement policy puts on the server.
	Capacity  int       `json:"capacity"`
	CreatedAt time.Time `json:"created_at"`
}
