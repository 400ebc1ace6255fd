package serve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/controlapi"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/web"
)

// Config configures a Server.
type Config struct {
	// Platform is the installation to serve. Required.
	Platform *platform.Platform
	// App is the application, served at "/" (every path the server does not
	// own). Nil: those paths answer 404.
	App http.Handler
	// OperatorToken is the shared token of the control API and the
	// dashboard (see controlapi.Config.Token): at least 16 bytes when set;
	// empty, only named operators' tokens open them.
	OperatorToken string
	// RecordControl receives every control action (see controlapi.Config.Record).
	RecordControl func(ctx context.Context, a controlapi.Action)
	// ControlOperations perform the lifecycle verbs of the control API (see
	// controlapi.Config.Operations).
	ControlOperations map[string]controlapi.Operation
	// TracerProvider, when set, traces each request in an OpenTelemetry
	// server span (otelhttp) that carries the tenant of /t/{slug}/… requests
	// (AttrTenantSlug, AttrTenantTier, AttrTenantModel). Nil: no tracing.
	TracerProvider trace.TracerProvider
	// Logger receives a line per request and internal errors. Nil: discard.
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration
}

// Server is the assembled HTTP server.
type Server struct {
	cfg     Config
	handler http.Handler
	metrics *metrics
	tenants *tenantCounts
	api     *controlapi.API
}

// New assembles the server.
func New(cfg Config) (*Server, error) {
	if cfg.Platform == nil {
		return nil, errors.New("serve: Config.Platform is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg, metrics: newMetrics(cfg.Platform), tenants: newTenantCounts()}
	api, err := controlapi.New(controlapi.Config{
		Platform: cfg.Platform, Token: cfg.OperatorToken, Record: cfg.RecordControl,
		Operations: cfg.ControlOperations, Logger: cfg.Logger, Requests: s.tenants.get, RequestSeries: s.tenants.series,
	})
	if err != nil {
		return nil, err
	}
	s.api = api
	mux := http.NewServeMux()
	mux.Handle("/control/", http.StripPrefix("/control", api))
	mux.Handle("/admin/", http.StripPrefix("/admin", web.Handler()))
	mux.Handle("GET /admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /metrics", s.metrics.serve)
	if cfg.App != nil {
		mux.Handle("/", cfg.App)
	}
	s.handler = s.traced(s.logged(mux))
	return s, nil
}

// Handler returns the server's handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on ln until ctx is done, then stops accepting, lets requests in
// flight finish and cancels the control API's background operations (within
// ShutdownTimeout; see controlapi.API.Close), and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	err = errors.Join(err, s.api.Close(sctx))
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// ready answers 200 when the catalog answers, 503 otherwise.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Platform.Catalog.Pool().Ping(ctx); err != nil {
		http.Error(w, "catalog unreachable", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// recorder remembers the status a handler wrote.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logged logs a line per request, with the tenant when the path names one,
// and counts it in the metrics (by area and status class, never by tenant).
func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		slug := tenantOf(r.URL.Path)
		if slug != "" {
			s.tagTenant(r, slug)
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		d := time.Since(start)
		area := areaOf(r.URL.Path)
		s.metrics.observe(area, rec.status, d)
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", rec.status),
			slog.Duration("duration", d), slog.String("request_id", w.Header().Get("X-Request-Id")),
		}
		if slug != "" {
			attrs = append(attrs, slog.String("tenant", slug))
			s.tenants.count(slug, rec.status)
			if rec.status == http.StatusTooManyRequests {
				if t, err := s.cfg.Platform.Cache.ResolveSlug(r.Context(), slug); err == nil {
					s.metrics.rateLimited(t.Tier, t.Model)
				}
			}
		}
		s.cfg.Logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	})
}

// areaOf classifies a path for the metrics.
func areaOf(path string) string {
	switch {
	case strings.HasPrefix(path, "/control/"):
		return "control"
	case strings.HasPrefix(path, "/admin"):
		return "admin"
	case path == "/metrics" || path == "/healthz" || path == "/readyz":
		return "ops"
	}
	return "app"
}

// tenantOf returns the slug of a /t/{slug}/… path, if it is a valid slug.
func tenantOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/t/")
	if !ok {
		return ""
	}
	slug, _, _ := strings.Cut(rest, "/")
	if tenancy.ValidateSlug(slug) != nil {
		return ""
	}
	return slug
}
