package controlapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/migrate"
	"github.com/tenancyhq/tenancy/provision"
	"github.com/tenancyhq/tenancy/router"
)

func (a *API) routes() {
	a.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	a.mux.HandleFunc("GET /v1/tenants", a.action("tenant.list", a.listTenants))
	a.mux.HandleFunc("POST /v1/tenants", a.action("tenant.create", a.createTenant))
	a.mux.HandleFunc("GET /v1/tenants/{slug}", a.action("tenant.show", a.showTenant))
	a.mux.HandleFunc("GET /v1/tenants/{slug}/usage", a.action("tenant.usage", a.tenantUsage))
	a.mux.HandleFunc("GET /v1/tenants/{slug}/usage/series", a.action("tenant.usage.series", a.tenantUsageSeries))
	a.mux.HandleFunc("GET /v1/tenants/{slug}/audit", a.action("tenant.audit.list", a.tenantAudit))
	a.mux.HandleFunc("GET /v1/tenants/{slug}/audit/verify", a.action("tenant.audit.verify", a.verifyAudit))
	for _, op := range []string{OpSuspend, OpResume, OpDelete, OpRestore, OpPurge, OpMove, OpChangeTier} {
		a.mux.HandleFunc("POST /v1/tenants/{slug}/"+op, a.action("tenant."+op, a.operation(op)))
	}
	a.mux.HandleFunc("GET /v1/operations", a.action("operation.list", a.listOperations))
	a.mux.HandleFunc("GET /v1/operations/{id}", a.action("operation.show", a.showOperation))
	a.mux.HandleFunc("GET /v1/servers", a.action("server.list", a.listServers))
	a.mux.HandleFunc("GET /v1/plans", a.action("plan.list", a.listPlans))
	a.mux.HandleFunc("GET /v1/operators", a.action("operator.list", a.listOperators))
	a.mux.HandleFunc("GET /v1/events", a.action("event.list", a.listEvents))
	a.mux.HandleFunc("GET /v1/events/verify", a.action("event.verify", a.verifyEvents))
	a.mux.HandleFunc("GET /v1/migrations", a.action("migration.status", a.migrationStatus))
	a.mux.HandleFunc("/", a.action("unknown", func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		return 0, nil, tenancy.Errorf(tenancy.CodeNotFound, "no route %s %s", r.Method, r.URL.Path)
	}))
}

// TenantView is a tenant as the API shows it, with its usage when asked.
type TenantView struct {
	*tenancy.Tenant
	Usage *Usage `json:"usage,omitempty"`
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request) (int, any, error) {
	q := r.URL.Query()
	opts := &catalog.ListOpts{Server: q.Get("server"), Status: tenancy.Status(q.Get("status"))}
	if m := q.Get("model"); m != "" {
		mdl, err := tenancy.ParseModel(m)
		if err != nil {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "model", "%s", err.Error())
		}
		opts.Model = mdl
	}
	withUsage := q.Get("usage") == "true"
	ts, err := a.cfg.Platform.Catalog.Tenants(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	out := make([]TenantView, len(ts))
	for i, t := range ts {
		out[i].Tenant = t
		if withUsage && t.Status != tenancy.StatusProvisioning {
			u, err := a.usage(r.Context(), t)
			if err != nil {
				a.logger.WarnContext(r.Context(), "tenant usage", "tenant", t.Slug, "error", err)
				continue
			}
			out[i].Usage = u
		}
	}
	return http.StatusOK, map[string]any{"items": out}, nil
}

func (a *API) tenant(r *http.Request) (*tenancy.Tenant, error) {
	slug := r.PathValue("slug")
	if err := tenancy.ValidateSlug(slug); err != nil {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "slug", "%s", err.Error())
	}
	return a.cfg.Platform.Catalog.TenantBySlug(r.Context(), slug)
}

func (a *API) showTenant(w http.ResponseWriter, r *http.Request) (int, any, error) {
	t, err := a.tenant(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, TenantView{Tenant: t}, nil
}

// CreateTenant is the body of POST /v1/tenants.
type CreateTenant struct {
	Slug   string `json:"slug"`
	Name   string `json:"name"`
	Tier   string `json:"tier"`
	Model  string `json:"model"`
	Server string `json:"server"`
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var in CreateTenant
	if err := httpx.DecodeJSON(http.MaxBytesReader(w, r.Body, 64<<10), &in); err != nil {
		if tenancy.ErrorField(err) == "body" {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body must be one JSON object: {slug, model, name?, tier?, server?}")
		}
		return 0, nil, err
	}
	if err := tenancy.ValidateSlug(in.Slug); err != nil {
		return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "slug", "%s", err.Error())
	}
	mdl, err := tenancy.ParseModel(in.Model)
	if err != nil {
		return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "model", "%s", err.Error())
	}
	if len(in.Name) > 200 {
		return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "name", "name must be at most 200 bytes")
	}
	if in.Tier != "" {
		if err := tenancy.ValidateName("tier", in.Tier); err != nil {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "tier", "%s", err.Error())
		}
	}
	if in.Server != "" {
		if err := tenancy.ValidateName("server", in.Server); err != nil {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "server", "%s", err.Error())
		}
		// A server the body names must exist: the body is wrong, not the URL.
		if _, err := a.cfg.Platform.Catalog.Server(r.Context(), in.Server); tenancy.ErrorCode(err) == tenancy.CodeNotFound {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "server", "there is no server %q", in.Server)
		} else if err != nil {
			return 0, nil, err
		}
	}
	t, err := a.cfg.Platform.CreateTenant(r.Context(), &provision.CreateOpts{
		Slug: in.Slug, Name: in.Name, Tier: tenancy.Tier(in.Tier), Model: mdl, Server: in.Server,
	})
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", "/v1/tenants/"+t.Slug)
	return http.StatusCreated, TenantView{Tenant: t}, nil
}

// operation answers a lifecycle verb: 202 with an OpResource for a verb run
// in the background, 200 with what its configured Operation returns, or 501.
func (a *API) operation(op string) handler {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		t, err := a.tenant(r)
		if err != nil {
			return 0, nil, err
		}
		fn, bg := a.cfg.Operations[op], a.background[op]
		if fn == nil && bg == nil {
			return 0, nil, tenancy.Errorf(tenancy.CodeNotImplemented,
				"%s is not available in this installation's control API yet; use `tenancy tenants %s` where the binary has it", op, op)
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body is too large")
		}
		if len(body) > 0 && !json.Valid(body) {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body must be JSON")
		}
		if bg != nil {
			run, err := bg(r.Context(), t, body)
			if err != nil {
				return 0, nil, err
			}
			res, err := a.ops.start(r.Context(), op, t.Slug, run)
			if err != nil {
				return 0, nil, err
			}
			// Relative to /…/v1/tenants/{slug}/{op}, wherever the API is mounted.
			w.Header().Set("Location", "../../operations/"+res.ID)
			return http.StatusAccepted, res, nil
		}
		out, err := fn(r.Context(), t, body)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, out, nil
	}
}

// adminTx runs fn on the tenant's data through the router's audited admin
// door, logged with the operator as actor and the reason.
func (a *API) adminTx(r *http.Request, t *tenancy.Tenant, reason string, fn func(pgx.Tx) error) error {
	return a.cfg.Platform.Router.AdminTx(r.Context(), &router.AdminOpts{
		Server: t.Placement.Server, Database: t.Placement.Database, Reason: reason + " " + t.Slug,
	}, fn)
}

func (a *API) tenantAudit(w http.ResponseWriter, r *http.Request) (int, any, error) {
	t, err := a.tenant(r)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	opts := audit.ListOpts{Table: q.Get("table"), Actor: q.Get("actor")}
	if err := numberParams(q, map[string]func(int64){
		"after": func(n int64) { opts.After = n },
		"limit": func(n int64) { opts.Limit = int(n) },
	}); err != nil {
		return 0, nil, err
	}
	if err := timeParams(q, map[string]*time.Time{"since": &opts.Since, "until": &opts.Until}); err != nil {
		return 0, nil, err
	}
	if v := q.Get("row"); v != "" {
		if opts.Row, err = audit.ParseRow(v); err != nil {
			return 0, nil, err
		}
	}
	var entries []audit.Entry
	var next int64
	err = a.adminTx(r, t, "control api: read the audit log of", func(tx pgx.Tx) (err error) {
		entries, next, err = audit.List(r.Context(), tx, t.Placement.Schema, t.ID, &opts)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	if entries == nil {
		entries = []audit.Entry{}
	}
	return http.StatusOK, map[string]any{"items": entries, "next": next}, nil
}

// timeParams parses the query parameters named in set, when present, as RFC
// 3339 times.
func timeParams(q url.Values, set map[string]*time.Time) error {
	for name, dst := range set {
		v := q.Get(name)
		if v == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, name, "%s must be an RFC 3339 time like 2026-11-24T10:00:00Z", name)
		}
		*dst = at
	}
	return nil
}

// numberParams parses the query parameters named in set, when present, as
// non-negative numbers and hands each to its function.
func numberParams(q url.Values, set map[string]func(int64)) error {
	for name, fn := range set {
		v := q.Get(name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, name, "%s must be a number", name)
		}
		fn(n)
	}
	return nil
}

func (a *API) verifyAudit(w http.ResponseWriter, r *http.Request) (int, any, error) {
	t, err := a.tenant(r)
	if err != nil {
		return 0, nil, err
	}
	var v *audit.Verification
	err = a.adminTx(r, t, "control api: verify the audit log of", func(tx pgx.Tx) (err error) {
		v, err = audit.Verify(r.Context(), tx, t.Placement.Schema, t.ID)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, v, nil
}

func (a *API) listServers(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ss, err := a.cfg.Platform.Catalog.Servers(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"items": ss}, nil
}

func (a *API) listOperators(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ops, err := a.cfg.Platform.Catalog.Operators(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if ops == nil {
		ops = []*catalog.Operator{}
	}
	return http.StatusOK, map[string]any{"items": ops}, nil
}

func (a *API) listPlans(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ps, err := a.cfg.Platform.Catalog.Plans(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"items": ps}, nil
}

func (a *API) migrationStatus(w http.ResponseWriter, r *http.Request) (int, any, error) {
	m, err := a.cfg.Platform.Migrator(nil)
	if err != nil {
		return 0, nil, err
	}
	st, err := m.Status(r.Context())
	if err != nil {
		return 0, nil, fmt.Errorf("migration status: %w", err)
	}
	if st == nil {
		st = []migrate.TargetStatus{}
	}
	return http.StatusOK, map[string]any{"latest": a.cfg.Platform.Model.Latest(), "targets": st}, nil
}
