// Package platform opens everything a tenancy process needs from one Config:
// the catalog and its cache, the router and the provisioner. It is what an
// application and the tenancy binary start with.
//
//	p, err := platform.Open(ctx, platform.Config{CatalogURL: url, DataModel: migrations})
//	...
//	t, err := p.CreateTenant(ctx, &provision.CreateOpts{Slug: "acme", Model: tenancy.ModelSchema})
//	ctx = tenancy.WithTenant(ctx, t)
//	err = p.Router.Tx(ctx, func(tx pgx.Tx) error { ... })
package platform

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/datamodel"
	"github.com/tenancyhq/tenancy/move"
	"github.com/tenancyhq/tenancy/provision"
	"github.com/tenancyhq/tenancy/ratelimit"
	"github.com/tenancyhq/tenancy/router"
)

// Config configures a Platform.
type Config struct {
	// CatalogURL is the catalog database, a postgres:// URL. Required.
	CatalogURL string
	// DataModel holds the tenant data model's migrations (see datamodel.Load). Required.
	DataModel fs.FS
	// AppRole is the role tenant transactions run as. Default "tenancy_app".
	AppRole string
	// AppPassword is AppRole's password, when servers need one.
	AppPassword string
	// MaxConnsPerServer is each server's connection budget. Default 50.
	MaxConnsPerServer int
	// TracerProvider, when set, traces tenant transactions and their
	// statements (see router.Config.TracerProvider).
	TracerProvider trace.TracerProvider
	// MaxConnsPerDatabase bounds the connections one database may hold of
	// its server's budget, so that a slow database tenant cannot take all
	// of it. Default: the whole budget (see router.Config).
	MaxConnsPerDatabase int
	// CacheTTL bounds how long a cached tenant is trusted without a
	// notification from the catalog. Default 30s.
	CacheTTL time.Duration
	// Logger receives what the library does not return. Nil: discard.
	Logger *slog.Logger
	// Limits turns on each tenant's limits (see limits.go). Nil: plans are
	// kept in the catalog but not enforced.
	Limits *LimitsConfig
	// Retention is how long a deleted tenant's data is kept before it may be
	// purged. Default provision.DefaultRetention (30 days).
	Retention time.Duration
	// SecretKey, 32 bytes, encrypts the servers' DSNs in the catalog (see
	// catalog.Catalog.SetSecretKey). Nil: they are stored in clear.
	SecretKey []byte
	// PreviousSecretKeys still decrypt what they encrypted, while the key
	// is rotated (catalog.Catalog.EncryptServers).
	PreviousSecretKeys [][]byte
}

// Platform is an open tenancy installation.
type Platform struct {
	Catalog     *catalog.Catalog
	Cache       *catalog.Cache
	Router      *router.Router
	Provisioner *provision.Provisioner
	Mover       *move.Mover
	Model       *datamodel.Model
	// Limiter decides tenants' request limits; nil unless Config.Limits.
	Limiter ratelimit.Limiter

	appRole string
	limits  *LimitsConfig
}

// Open connects to the catalog, creates or upgrades its tables, starts
// following its changes, and returns the platform.
func Open(ctx context.Context, cfg Config) (*Platform, error) {
	if cfg.CatalogURL == "" {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "platform: a catalog URL is required")
	}
	if cfg.DataModel == nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "platform: a data model is required")
	}
	if cfg.AppRole == "" {
		cfg.AppRole = "tenancy_app"
	}
	model, err := datamodel.Load(cfg.DataModel)
	if err != nil {
		return nil, err
	}
	cat, err := catalog.Open(ctx, cfg.CatalogURL)
	if err != nil {
		return nil, err
	}
	if cfg.SecretKey != nil {
		if err := cat.SetSecretKey(cfg.SecretKey, cfg.PreviousSecretKeys...); err != nil {
			cat.Close()
			return nil, err
		}
	}
	p := &Platform{Catalog: cat, Model: model, appRole: cfg.AppRole}
	if err := p.open(ctx, cfg); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Platform) open(ctx context.Context, cfg Config) error {
	if err := p.Catalog.Migrate(ctx); err != nil {
		return err
	}
	key, err := p.Catalog.TenantKey(ctx)
	if err != nil {
		return err
	}
	p.Cache = catalog.NewCache(p.Catalog, catalog.CacheConfig{TTL: cfg.CacheTTL, Logger: cfg.Logger})
	if err := p.Cache.Start(ctx); err != nil {
		p.Cache = nil
		return fmt.Errorf("follow catalog changes: %w", err)
	}
	rc := router.Config{
		Resolver:            p.Cache,
		Servers:             p.Catalog,
		Key:                 key,
		AppRole:             cfg.AppRole,
		AppPassword:         cfg.AppPassword,
		MaxConnsPerServer:   cfg.MaxConnsPerServer,
		MaxConnsPerDatabase: cfg.MaxConnsPerDatabase,
		TracerProvider:      cfg.TracerProvider,
		Logger:              cfg.Logger,
	}
	if err := p.limitRouter(&rc, cfg.Limits, cfg.Logger); err != nil {
		return err
	}
	p.Router, err = router.New(rc)
	if err != nil {
		return err
	}
	p.Provisioner, err = provision.New(provision.Config{
		Catalog: p.Catalog, Model: p.Model, Key: key, AppRole: cfg.AppRole, AppPassword: cfg.AppPassword,
		Retention: cfg.Retention,
	})
	if err != nil {
		return err
	}
	p.Mover, err = move.New(move.Config{Catalog: p.Catalog, Provisioner: p.Provisioner, Model: p.Model, Logger: cfg.Logger})
	return err
}

// Close stops following the catalog and closes every connection.
func (p *Platform) Close() {
	if p.Router != nil {
		p.Router.Close()
	}
	if p.Cache != nil {
		p.Cache.Close()
	}
	p.Catalog.Close()
}

// AddServer prepares a server of the data plane (application role, tenancy
// schema, shared tables) and records it in the catalog.
func (p *Platform) AddServer(ctx context.Context, s *tenancy.Server) error {
	if err := tenancy.ValidateName("server name", s.Name); err != nil {
		return err
	}
	if err := p.Provisioner.BootstrapServer(ctx, s); err != nil {
		return err
	}
	return p.Catalog.AddServer(ctx, s)
}

// CreateTenant creates a tenant and its storage; see provision.Provisioner.Create.
func (p *Platform) CreateTenant(ctx context.Context, opts *provision.CreateOpts) (*tenancy.Tenant, error) {
	return p.Provisioner.Create(ctx, opts)
}

// TenantContext returns ctx carrying the tenant with the given slug, for work
// that does not come through the HTTP middleware (jobs, scripts). It fails
// unless the tenant may be served.
func (p *Platform) TenantContext(ctx context.Context, slug string) (context.Context, error) {
	t, err := p.Cache.ResolveSlug(ctx, slug)
	if err != nil {
		return nil, err
	}
	if err := t.CheckServable(); err != nil {
		return nil, err
	}
	return tenancy.WithTenant(ctx, t), nil
}
