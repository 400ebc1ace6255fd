// Command crm serves the example CRM on its own, on an installation that
// `tenancy` already set up (servers and tenants in the catalog):
//
//	crm -catalog postgres://admin@db/tenancy_catalog -addr 127.0.0.1:8081
//
// It opens the platform with the CRM's data model, runs the background
// import jobs, and serves until interrupted. `tenancy demo` serves the same
// handler beside the control API and the dashboard.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"github.com/tenancyhq/tenancy/examples/crm"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/platform"
)

func main() {
	catalogURL := flag.String("catalog", os.Getenv("TENANCY_DATABASE_URL"), "the catalog database (default $TENANCY_DATABASE_URL)")
	addr := flag.String("addr", "127.0.0.1:8081", "the address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *catalogURL, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "crm:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, catalogURL, addr string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p, err := platform.Open(ctx, platform.Config{CatalogURL: catalogURL, DataModel: crm.Migrations(), Logger: logger})
	if err != nil {
		return err
	}
	defer p.Close()

	workers := river.NewWorkers()
	crm.AddWorkers(workers, p)
	jc, err := jobs.Open(ctx, p, &jobs.Config{Workers: workers, Logger: logger})
	if err != nil {
		return err
	}
	if err := jc.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = jc.Stop(sctx)
	}()

	app, err := crm.New(ctx, p, &crm.Config{Jobs: jc, Logger: logger})
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: app, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	logger.Info("crm is serving", "addr", "http://"+addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
