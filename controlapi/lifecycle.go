package controlapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/move"
	"github.com/tenancyhq/tenancy/platform"
	"github.com/tenancyhq/tenancy/provision"
)

// defaultOperations are the lifecycle verbs the platform performs. Each
// records its control-plane event itself (with the operator and client IP of
// the context).
func defaultOperations(p *platform.Platform) map[string]Operation {
	simple := func(fn func(context.Context, string) (*tenancy.Tenant, error)) Operation {
		return func(ctx context.Context, t *tenancy.Tenant, _ json.RawMessage) (any, error) {
			return fn(ctx, t.Slug)
		}
	}
	return map[string]Operation{
		OpSuspend: simple(p.SuspendTenant),
		OpResume:  simple(p.ResumeTenant),
		OpDelete:  simple(p.DeleteTenant),
		OpRestore: simple(p.RestoreTenant),
		OpChangeTier: func(ctx context.Context, t *tenancy.Tenant, body json.RawMessage) (any, error) {
			var in struct {
				Tier string `json:"tier"`
			}
			if err := decodeOpBody(body, &in); err != nil {
				return nil, err
			}
			if err := tenancy.ValidateName("tier", in.Tier); err != nil {
				return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "tier", "%s", err.Error())
			}
			return p.SetTenantTier(ctx, t.Slug, tenancy.Tier(in.Tier))
		},
	}
}

// background is a lifecycle verb that the API runs in the background: check
// validates the request and returns the work to run, or an error answered
// at once (nothing has changed then).
type background func(ctx context.Context, t *tenancy.Tenant, body json.RawMessage) (run func(context.Context, progress) (any, error), err error)

// moveOperation checks a move's destination before answering, so that a bad
// one is refused with the field it names; the move itself (see package move)
// runs in the background, the tenant working meanwhile. An interrupted move
// is finished or rolled back by posting it again. With "tier" instead of
// "model", the tenant gets that tier and moves to the tier's model
// (move.Mover.ChangeTier with the default policy: free → shared, pro →
// schema, enterprise → database), as `tenancy tenants move --tier` does.
func moveOperation(p *platform.Platform) background {
	return func(ctx context.Context, t *tenancy.Tenant, body json.RawMessage) (func(context.Context, progress) (any, error), error) {
		var in struct {
			Model      string `json:"model"`
			Tier       string `json:"tier"`
			Server     string `json:"server"`
			KeepSource bool   `json:"keep_source"`
		}
		if err := decodeOpBody(body, &in); err != nil {
			return nil, err
		}
		var model tenancy.Model
		var err error
		switch {
		case in.Tier == "":
			if model, err = tenancy.ParseModel(in.Model); err != nil {
				return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "model", "%s (or give a tier)", err.Error())
			}
		case in.Model != "":
			return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "model", "give a model or a tier, not both")
		default:
			if err := tenancy.ValidateName("tier", in.Tier); err != nil {
				return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "tier", "%s", err.Error())
			}
		}
		server := t.Placement.Server
		if in.Server != "" {
			if err := tenancy.ValidateName("server", in.Server); err != nil {
				return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "server", "%s", err.Error())
			}
			if _, err := p.Catalog.Server(ctx, in.Server); tenancy.ErrorCode(err) == tenancy.CodeNotFound {
				return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "server", "there is no server %q", in.Server)
			} else if err != nil {
				return nil, err
			}
			server = in.Server
		}
		// A move left unfinished is finished or rolled back first (see
		// move.Mover.Move): its tenant may be moving, or already placed at
		// the destination asked for.
		unfinished, err := p.Mover.Unfinished(ctx, t.ID)
		if err != nil {
			return nil, err
		}
		if !unfinished && in.Tier == "" && model == t.Model && server == t.Placement.Server {
			return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "model", "tenant %q is already a %s tenant on server %q", t.Slug, model, server)
		}
		if !unfinished && t.Status != tenancy.StatusActive {
			return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is %s: only an active tenant can be moved", t.Slug, t.Status)
		}
		opts := &move.Opts{To: model, Server: in.Server, KeepSource: in.KeepSource}
		return func(ctx context.Context, report progress) (any, error) {
			opts.Progress = func(pr move.Progress) { report(pr.Step, pr.Rows) }
			if in.Tier == "" {
				return p.Mover.Move(ctx, t.Slug, opts)
			}
			nt, res, err := p.Mover.ChangeTier(ctx, t.Slug, tenancy.Tier(in.Tier), nil, opts)
			if err != nil || res != nil {
				return res, err
			}
			report("done", 0) // the tier's model is the tenant's already
			return nt, nil
		}, nil
	}
}

// purgeOperation checks a purge before answering (the confirmation, the
// tenant deleted and its retention passed), so that a refused purge is
// answered at once and changes nothing; the purge itself — dropping a
// database or a schema, or deleting a shared tenant's rows, which takes as
// long as the tenant is large — runs in the background. A purge interrupted
// half-way is finished by posting it again.
func purgeOperation(p *platform.Platform) background {
	return func(ctx context.Context, t *tenancy.Tenant, body json.RawMessage) (func(context.Context, progress) (any, error), error) {
		var in struct {
			Confirm string `json:"confirm"`
		}
		if err := decodeOpBody(body, &in); err != nil {
			return nil, err
		}
		opts := &provision.PurgeOpts{Confirm: in.Confirm}
		if err := p.Provisioner.CheckPurge(ctx, t.Slug, opts); err != nil {
			return nil, err
		}
		return func(ctx context.Context, report progress) (any, error) {
			report("purging", 0)
			purged, err := p.PurgeTenant(ctx, t.Slug, opts)
			if err == nil {
				report("done", 0)
			}
			return purged, err
		}, nil
	}
}

// decodeOpBody decodes an operation's JSON body, refusing unknown fields;
// the error names the member that is wrong.
func decodeOpBody(body json.RawMessage, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = json.RawMessage(`{}`)
	}
	return httpx.DecodeJSON(bytes.NewReader(body), v)
}

// listEvents answers the control plane's audit log: ?tenant= ?kind=
// ?operator= ?after= ?limit=.
func (a *API) listEvents(w http.ResponseWriter, r *http.Request) (int, any, error) {
	q := r.URL.Query()
	opts := &catalog.EventOpts{Kind: catalog.EventKind(q.Get("kind")), Operator: q.Get("operator")}
	if slug := q.Get("tenant"); slug != "" {
		if err := tenancy.ValidateSlug(slug); err != nil {
			return 0, nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "tenant", "%s", err.Error())
		}
		t, err := a.cfg.Platform.Catalog.TenantBySlug(r.Context(), slug)
		if err != nil {
			return 0, nil, err
		}
		opts.TenantID = t.ID
	}
	if err := numberParams(q, map[string]func(int64){
		"after": func(n int64) { opts.After = n },
		"limit": func(n int64) { opts.Limit = int(n) },
	}); err != nil {
		return 0, nil, err
	}
	if err := timeParams(q, map[string]*time.Time{"since": &opts.Since, "until": &opts.Until}); err != nil {
		return 0, nil, err
	}
	events, next, err := a.cfg.Platform.Catalog.Events(r.Context(), opts)
	if err != nil {
		return 0, nil, err
	}
	if events == nil {
		events = []catalog.Event{}
	}
	return http.StatusOK, map[string]any{"items": events, "next": next}, nil
}

func (a *API) verifyEvents(w http.ResponseWriter, r *http.Request) (int, any, error) {
	v, err := a.cfg.Platform.Catalog.VerifyEvents(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, v, nil
}
