package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/tenancyhq/tenancy/internal/pgcluster"
)

// RestartableServer is a private PostgreSQL server of one test, which the test
// may stop and start again: a restart under load, or an outage of a while. It
// keeps its data directory and its port across restarts, so URLs taken before
// a restart work after it. It is a *Server for everything else.
type RestartableServer struct {
	*Server

	mu  sync.Mutex
	cfg pgcluster.Config
	c   *pgcluster.Cluster // nil while stopped
}

// Restartable starts a private server for the calling test alone, and stops it
// and removes its data when the test ends. Unlike the servers of Servers, it
// is never shared, so stopping it disturbs no other test. The test is skipped
// when TENANCY_TEST_DATABASE_URL or TENANCY_TEST_DATABASE_URLS point the
// harness at existing servers, which it cannot restart.
func Restartable(tb testing.TB) *RestartableServer {
	tb.Helper()
	if os.Getenv(EnvURL) != "" || os.Getenv(EnvURLs) != "" {
		tb.Skipf("pgtest: a restartable server needs a private cluster; %s or %s is set", EnvURL, EnvURLs)
	}
	dir, err := os.MkdirTemp("/tmp", "tenancy-pgr-")
	if err != nil {
		tb.Fatalf("pgtest: data directory: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	s := &RestartableServer{cfg: pgcluster.Config{Dir: dir, Fast: true, StopWithProcess: true}}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.start(ctx); err != nil {
		tb.Fatalf("pgtest: start a restartable server: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := s.stop(ctx); err != nil {
			tb.Errorf("pgtest: stop the restartable server: %v", err)
		}
	})
	s.cfg.Port = s.c.Port() // the same port after every restart

	maint, err := url.Parse(s.c.URL("postgres"))
	if err != nil {
		tb.Fatalf("pgtest: parse cluster url: %v", err)
	}
	// Its own host, not registered in state: the test's clean-up stops it.
	h := &host{templates: make(map[string]*template)}
	h.admin = &Server{name: s.c.URL(""), maint: maint, host: h}
	s.Server = &Server{name: UniqueName("pgr"), maint: maint, host: h}
	return s
}

// Stop shuts the server down (open sessions are disconnected; committed data
// is kept). Stopping a stopped server does nothing.
func (s *RestartableServer) Stop(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.stop(ctx); err != nil {
		tb.Fatalf("pgtest: stop %s: %v", s.name, err)
	}
}

// Start starts the server again on the same port and data. Starting a running
// server does nothing.
func (s *RestartableServer) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.start(ctx); err != nil {
		tb.Fatalf("pgtest: start %s: %v", s.name, err)
	}
}

// Restart stops the server and starts it again.
func (s *RestartableServer) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	s.Start(tb)
}

func (s *RestartableServer) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		return nil
	}
	c, err := pgcluster.Start(ctx, s.cfg)
	if err != nil {
		return err
	}
	s.c = c
	return nil
}

func (s *RestartableServer) stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	if err := s.c.Stop(ctx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	s.c = nil
	return nil
}
