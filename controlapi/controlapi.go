package controlapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/platform"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI 3 document.
func OpenAPI() []byte { return openAPI }

// Action is one control action, as Config.Record receives it.
type Action struct {
	At time.Time `json:"at"`
	// Actor is the operator: "operator:NAME" for a named operator's token
	// (catalog.AddOperator), "operator:token" for the shared Config.Token.
	Actor string `json:"actor"`
	// Name says what was done, for example "tenant.create" or "tenant.audit.list".
	Name string `json:"name"`
	// Tenant is the slug the action is about, if any.
	Tenant    string `json:"tenant,omitempty"`
	RequestID string `json:"request_id"`
	ClientIP  string `json:"client_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	// Outcome is "ok" or the error code, for example "invalid".
	Outcome string `json:"outcome"`
	// Detail is the error message shown to the caller, when there is one.
	Detail string `json:"detail,omitempty"`
}

// Operation performs a lifecycle verb on a tenant. body is the request body
// (for example {"model": "database"} for move), possibly empty. It returns
// what to answer: the tenant, or an operation resource to poll.
type Operation func(ctx context.Context, t *tenancy.Tenant, body json.RawMessage) (any, error)

// The lifecycle verbs that Config.Operations may provide.
const (
	OpSuspend    = "suspend"
	OpResume     = "resume"
	OpDelete     = "delete"
	OpRestore    = "restore"
	OpPurge      = "purge"
	OpMove       = "move"
	OpChangeTier = "change-tier"
)

// Config configures the API.
type Config struct {
	// Platform is the installation to control. Required.
	Platform *platform.Platform
	// Token is the shared operator token, at least 16 bytes when set; its
	// actions are recorded as operator:token. Empty: only named operators'
	// tokens (catalog.AddOperator) open the API.
	Token string
	// Record receives every control action once it is done. Nil: log it at
	// level Info on Logger. The control-plane audit log plugs in here.
	Record func(ctx context.Context, a Action)
	// Operations perform the lifecycle verbs (OpSuspend, …), replacing the
	// platform's own for the verbs they name, and answered 200 with what they
	// return. The platform performs suspend, resume, delete, restore, purge,
	// change-tier and move, each recording its control-plane event; its move
	// and purge run in the background once the request is checked, answered
	// 202 with an OpResource to poll. A verb without an operation is answered
	// 501 Not Implemented.
	Operations map[string]Operation
	// Requests, when set, reports a tenant's HTTP requests and 429s (see
	// Usage); serve counts them.
	Requests func(slug string) (requests, rateLimited int64)
	// RequestSeries, when set, reports a tenant's requests and 429s per
	// minute, oldest first (GET /v1/tenants/{slug}/usage/series).
	RequestSeries func(slug string) []UsagePoint
	// Logger receives internal errors and, without Record, the actions.
	Logger *slog.Logger
}

// API is the control API's handler.
type API struct {
	cfg       Config
	tokenHash [32]byte
	mux       *http.ServeMux
	logger    *slog.Logger
	// background are the verbs run in the background, and ops runs them.
	background map[string]background
	ops        *operations
}

// New returns the control API.
func New(cfg Config) (*API, error) {
	if cfg.Platform == nil {
		return nil, errors.New("controlapi: Config.Platform is required")
	}
	if cfg.Token != "" && len(cfg.Token) < 16 {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "controlapi: the shared operator token must be at least 16 bytes")
	}
	a := &API{cfg: cfg, tokenHash: sha256.Sum256([]byte(cfg.Token)), mux: http.NewServeMux(), logger: cfg.Logger}
	ops := defaultOperations(cfg.Platform)
	a.background = map[string]background{OpMove: moveOperation(cfg.Platform), OpPurge: purgeOperation(cfg.Platform)}
	for verb, op := range cfg.Operations {
		ops[verb] = op
		delete(a.background, verb)
	}
	a.cfg.Operations = ops
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	if a.cfg.Record == nil {
		a.cfg.Record = func(ctx context.Context, act Action) {
			a.logger.LogAttrs(ctx, slog.LevelInfo, "control action", slog.String("action", act.Name), slog.String("actor", act.Actor),
				slog.String("tenant", act.Tenant), slog.String("outcome", act.Outcome), slog.String("request_id", act.RequestID))
		}
	}
	a.ops = newOperations(a.logger, cfg.Platform.Catalog)
	a.ops.failed = a.recordFailure
	a.routes()
	return a, nil
}

// recordFailure writes an operation that failed in the background to the
// control-plane log: the move itself records only its success, and the
// client that started it may never poll.
func (a *API) recordFailure(ctx context.Context, kind, slug string, err error) {
	e := &catalog.Event{Kind: catalog.EventOperationFailed, TenantSlug: slug}
	if t, terr := a.cfg.Platform.Catalog.TenantBySlug(ctx, slug); terr == nil {
		e.TenantID = t.ID
	}
	p := problemOf(err)
	if rerr := a.cfg.Platform.Catalog.RecordEvent(ctx, e, map[string]string{"operation": kind, "code": string(p.Code), "detail": p.Detail}); rerr != nil {
		a.logger.WarnContext(ctx, "record a failed operation", "operation", kind, "tenant", slug, "error", rerr)
	}
}

// ServeHTTP serves the API. The OpenAPI document needs no token.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// handler is one control action: it returns what to answer, or an error.
type handler func(w http.ResponseWriter, r *http.Request) (status int, body any, err error)

type actionKey struct{}

// action wraps a handler: request id and client into the context, the
// operator token checked, the action recorded whatever its outcome.
func (a *API) action(name string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := httpx.RequestID(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", id)
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		ctx := httpx.WithLogger(tenancy.WithRequestID(r.Context(), id), a.logger)
		ctx = tenancy.WithClient(ctx, tenancy.Client{IP: ip, UserAgent: r.UserAgent()})
		act := &Action{At: time.Now(), Name: name, Tenant: r.PathValue("slug"), RequestID: id, ClientIP: ip, UserAgent: r.UserAgent()}
		ctx = context.WithValue(ctx, actionKey{}, act)
		r = r.WithContext(ctx)

		status, body := 0, any(nil)
		actor, role, err := a.authenticate(r)
		act.Actor = actor.String() // "" when the token is refused
		if err == nil && role == catalog.RoleViewer && r.Method != http.MethodGet && r.Method != http.MethodHead {
			err = tenancy.Errorf(tenancy.CodeForbidden, "operator %q is a viewer: it may read, not change anything", actor.ID)
		}
		if err == nil {
			err = textQuery(r.URL.Query())
		}
		if err == nil {
			r = r.WithContext(tenancy.WithActor(ctx, actor))
			status, body, err = h(w, r)
		}
		act.Outcome = "ok"
		if err != nil {
			act.Outcome = string(tenancy.ErrorCode(err))
			if act.Outcome != string(tenancy.CodeInternal) {
				act.Detail = err.Error()
			}
		}
		a.cfg.Record(context.WithoutCancel(r.Context()), *act)
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		writeJSON(w, status, body)
	}
}

// textQuery refuses a query parameter that PostgreSQL text cannot hold (a
// NUL or invalid UTF-8): the filters end up compared in SQL, where such a
// value fails as an internal error.
func textQuery(q url.Values) error {
	isText := func(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
	for name, vals := range q {
		for _, v := range vals {
			if isText(name) && isText(v) {
				continue
			}
			at := name
			if at == "" || !isText(name) {
				at = "query"
			}
			return tenancy.FieldErrorf(tenancy.CodeInvalid, at, "query parameters must be valid UTF-8 text without NUL")
		}
	}
	return nil
}

// authenticate returns the operator that the request's token names, and its
// role: a named operator's token (opk_…, looked up in the catalog), or the
// shared operator token (an admin), compared in constant time (of
// equal-length hashes, so the token's length does not leak either). The
// shared token needs no catalog, so it works while the catalog is down.
func (a *API) authenticate(r *http.Request) (tenancy.Actor, string, error) {
	tok := accounts.BearerToken(r.Header.Get("Authorization"))
	if catalog.IsOperatorToken(tok) {
		o, err := a.cfg.Platform.Catalog.OperatorByToken(r.Context(), tok)
		if err != nil {
			return tenancy.Actor{}, "", err
		}
		return tenancy.Actor{Kind: "operator", ID: o.Name}, o.Role, nil
	}
	got := sha256.Sum256([]byte(tok))
	if a.cfg.Token == "" || tok == "" || subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) != 1 {
		return tenancy.Actor{}, "", tenancy.Errorf(tenancy.CodeUnauthorized, "the control API needs an operator token: Authorization: Bearer <token>")
	}
	return tenancy.Actor{Kind: "operator", ID: catalog.SharedOperator}, catalog.RoleAdmin, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, status = []byte(`{"error":"encode response"}`), http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
