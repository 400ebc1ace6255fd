package crm

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"net/http"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/ratelimit"
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

// Config configures the App.
type Config struct {
	// Accounts checks logins and memberships. Nil: accounts.New on the
	// platform's catalog.
	Accounts *accounts.Accounts
	// Jobs runs the CSV imports in the background; its workers must include
	// AddWorkers'. Nil: POST /contacts/import imports within the request.
	Jobs *jobs.Client
	// Logger receives internal errors. Nil: discard.
	Logger *slog.Logger
	// LoginLimiter slows down password guessing on POST /login (per email
	// and per client IP) and account creation on POST /signup (per client
	// IP). Nil: an in-process ratelimit.Local; give the platform's Redis
	// limiter to share the budget across app nodes.
	LoginLimiter ratelimit.Limiter
}

// App is the CRM's HTTP handler.
type App struct {
	p      *platform.Platform
	acc    *accounts.Accounts
	jobs   *jobs.Client
	logins ratelimit.Limiter
	mux    *http.ServeMux
}

// New returns the CRM on the platform p, whose data model must include
// Migrations().
func New(ctx context.Context, p *platform.Platform, cfg *Config) (*App, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	app := &App{p: p, acc: cfg.Accounts, jobs: cfg.Jobs, logins: cfg.LoginLimiter}
	if app.logins == nil {
		app.logins = ratelimit.NewLocal()
	}
	if app.acc == nil {
		var err error
		if app.acc, err = accounts.New(ctx, accounts.Config{Catalog: p.Catalog}); err != nil {
			return nil, err
		}
	}
	tenantMW, err := httpx.Middleware(httpx.Config{
		Resolver: p.Cache,
		Sources:  []httpx.Source{httpx.FromPathPrefix("/t/")},
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	tenantMux := http.NewServeMux()
	for _, res := range resources {
		res.register(tenantMux, app)
	}
	tenantMux.HandleFunc("POST /contacts/import", app.handle(accounts.RoleMember, app.importContacts))
	tenantMux.HandleFunc("GET /jobs/{id}", app.handle(accounts.RoleMember, app.job))
	tenantMux.HandleFunc("GET /audit", app.handle(accounts.RoleAdmin, app.auditLog))
	tenantMux.HandleFunc("GET /api-keys", app.handle(accounts.RoleAdmin, app.listAPIKeys))
	tenantMux.HandleFunc("POST /api-keys", app.handle(accounts.RoleAdmin, app.createAPIKey))
	tenantMux.HandleFunc("DELETE /api-keys/{id}", app.handle(accounts.RoleAdmin, app.revokeAPIKey))
	tenantMux.HandleFunc("GET /members", app.handle(accounts.RoleMember, app.listMembers))
	tenantMux.HandleFunc("PUT /members", app.handle(accounts.RoleAdmin, app.setMember))
	tenantMux.HandleFunc("/", app.handle(accounts.RoleMember, notFound))

	// resolve → limit → handler, when the platform enforces plans.
	var tenantHandler http.Handler = tenantMux
	if p.Limiter != nil {
		limit, err := p.LimitMiddleware()
		if err != nil {
			return nil, err
		}
		tenantHandler = limit(tenantHandler)
	}

	// Outside any tenant: the account.
	app.mux = http.NewServeMux()
	app.mux.Handle("/t/", tenantMW(tenantHandler))
	app.mux.HandleFunc("POST /signup", app.plain(cfg.Logger, app.signup))
	app.mux.HandleFunc("POST /login", app.plain(cfg.Logger, app.login))
	app.mux.HandleFunc("GET /me", app.plain(cfg.Logger, app.me))
	return app, nil
}

// ServeHTTP serves the CRM.
func (app *App) ServeHTTP(w http.ResponseWriter, r *http.Request) { app.mux.ServeHTTP(w, r) }

// Accounts returns the accounts the App checks logins against.
func (app *App) Accounts() *accounts.Accounts { return app.acc }

type principalKey struct{}

// handler is a tenant route: it returns an error instead of writing one.
type handler func(app *App, w http.ResponseWriter, r *http.Request) error

// handle authorizes the request for the tenant that httpx put into its
// context — on every request: token or API key, membership, role at least
// min — puts the actor into the context for the audit trail, and answers the
// handler's error as a problem.
func (app *App) handle(min accounts.Role, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		t, ok := tenancy.TenantFromContext(ctx)
		if !ok { // cannot happen behind httpx.Middleware; fail closed anyway
			httpx.WriteError(w, r, tenancy.ErrNoTenant)
			return
		}
		pr, err := app.acc.Authorize(ctx, t.ID, accounts.BearerToken(r.Header.Get("Authorization")))
		if err == nil && !pr.Role.AtLeast(min) {
			err = tenancy.Errorf(tenancy.CodeForbidden, "this needs the %s role; yours is %s", min, pr.Role)
		}
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		ctx = tenancy.WithActor(ctx, pr.Actor)
		ctx = context.WithValue(ctx, principalKey{}, pr)
		if err := h(app, w, r.WithContext(ctx)); err != nil {
			httpx.WriteError(w, r.WithContext(ctx), err)
		}
	}
}

func principal(r *http.Request) *accounts.Principal {
	p, _ := r.Context().Value(principalKey{}).(*accounts.Principal)
	return p
}

func notFound(_ *App, _ http.ResponseWriter, r *http.Request) error {
	return tenancy.Errorf(tenancy.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
}
