package move_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/move"
	"github.com/tenancyhq/tenancy/platform"
)

// Example moves a customer who outgrew the shared tables into a database of
// its own on another server, while it keeps working. It needs PostgreSQL
// servers, so it is compiled but not run; TestMoveDirections runs the same
// path under writers.
func Example() {
	ctx := context.Background()
	p, err := platform.Open(ctx, platform.Config{
		CatalogURL: "postgres://admin@localhost:5432/tenancy_catalog",
		DataModel:  os.DirFS("migrations"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	res, err := p.Mover.Move(ctx, "acme", &move.Opts{
		To:     tenancy.ModelDatabase,
		Server: "pg-eu-2",
		Progress: func(pr move.Progress) {
			log.Printf("%s: %s %s", pr.Slug, pr.Step, pr.Table)
		},
	})
	if errors.Is(err, move.ErrMismatch) {
		log.Fatal("verification failed; the move was rolled back and acme stays where it was: ", err)
	}
	if err != nil {
		// Interrupted (the process died, the network went)? Running the move
		// again finishes it, or rolls it back first and starts over.
		log.Fatal(err)
	}
	fmt.Printf("acme is now at %s; %d rows copied, writes paused %s\n", res.To, res.Rows, res.Pause)
}
