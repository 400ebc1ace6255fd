package crm

import (
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/ratelimit"
)

// plain serves a route outside any tenant (the account): it gives the request
// an id and a logger, and answers errors as problems.
func (app *App) plain(logger *slog.Logger, h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := httpx.RequestID(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", id)
		ctx := httpx.WithLogger(tenancy.WithRequestID(r.Context(), id), logger)
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		ctx = tenancy.WithClient(ctx, tenancy.Client{IP: ip, UserAgent: r.UserAgent()})
		r = r.WithContext(ctx)
		if err := h(w, r); err != nil {
			httpx.WriteError(w, r, err)
		}
	}
}

// decodeBody reads a JSON object into v, refusing unknown fields and
// anything after the object; the error names the member that is wrong.
func decodeBody(r *http.Request, v any) error {
	return httpx.DecodeJSON(http.MaxBytesReader(nil, r.Body, maxBody), v)
}

func (app *App) signup(w http.ResponseWriter, r *http.Request) error {
	var in accounts.NewUser
	var body struct {
		Email    string `json:"email"`
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if err := app.throttle(w, r, "crm-signup:ip:", signupPerIP); err != nil {
		return err
	}
	in = accounts.NewUser{Email: body.Email, Name: body.Name, Password: body.Password}
	u, err := app.acc.CreateUser(r.Context(), &in)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, u)
}

// session is the answer to a login.
type session struct {
	Token     string                `json:"token"`
	ExpiresAt time.Time             `json:"expires_at"`
	User      *accounts.User        `json:"user"`
	Tenants   []accounts.Membership `json:"tenants"`
}

func (app *App) login(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if err := app.throttleLogin(w, r, body.Email); err != nil {
		return err
	}
	tok, u, exp, err := app.acc.Login(r.Context(), body.Email, body.Password)
	if err != nil {
		return err
	}
	ms, err := app.acc.Memberships(r.Context(), u.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, session{Token: tok, ExpiresAt: exp, User: u, Tenants: ms})
}

// Login attempts: per email, 10 at once then one every 6 seconds; per client
// IP, 30 at once then one a second. Signups: per client IP, 10 at once then
// one a minute.
var (
	loginPerEmail = ratelimit.PerSecond(1.0/6, 10)
	loginPerIP    = ratelimit.PerSecond(1, 30)
	signupPerIP   = ratelimit.PerSecond(1.0/60, 10)
)

// throttleLogin counts a login attempt against the email and the client, and
// refuses it (429 with Retry-After) when either is over its budget.
func (app *App) throttleLogin(w http.ResponseWriter, r *http.Request, email string) error {
	if err := app.throttle(w, r, "crm-login:email:"+strings.ToLower(strings.TrimSpace(email)), loginPerEmail); err != nil {
		return err
	}
	return app.throttle(w, r, "crm-login:ip:", loginPerIP)
}

// throttle counts one attempt against key (the client IP is appended to keys
// ending in "ip:") and refuses it, 429 with Retry-After, over the limit.
func (app *App) throttle(w http.ResponseWriter, r *http.Request, key string, limit ratelimit.Limit) error {
	if strings.HasSuffix(key, "ip:") {
		c, _ := tenancy.ClientFromContext(r.Context())
		key += c.IP
	}
	res, err := app.logins.Allow(r.Context(), key, limit)
	if err != nil {
		return err
	}
	if !res.Allowed {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(res.RetryAfter.Seconds())))))
		return tenancy.Errorf(tenancy.CodeRateLimited, "too many attempts; retry later")
	}
	return nil
}

func (app *App) me(w http.ResponseWriter, r *http.Request) error {
	id, err := app.acc.VerifyToken(accounts.BearerToken(r.Header.Get("Authorization")))
	if err != nil {
		return err
	}
	u, err := app.acc.User(r.Context(), id)
	if err != nil {
		return tenancy.Errorf(tenancy.CodeUnauthorized, "this account no longer exists")
	}
	ms, err := app.acc.Memberships(r.Context(), u.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		User    *accounts.User        `json:"user"`
		Tenants []accounts.Membership `json:"tenants"`
	}{u, ms})
}

func (app *App) listAPIKeys(_ *App, w http.ResponseWriter, r *http.Request) error {
	t, _ := tenancy.TenantFromContext(r.Context())
	keys, err := app.acc.APIKeys(r.Context(), t.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": keys})
}

func (app *App) createAPIKey(_ *App, w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	if body.Role == "" {
		body.Role = string(accounts.RoleMember)
	}
	t, _ := tenancy.TenantFromContext(r.Context())
	k, secret, err := app.acc.CreateAPIKey(r.Context(), t.ID, body.Name, accounts.Role(body.Role), principal(r).UserID)
	if err != nil {
		return err
	}
	// The secret is in this answer and nowhere else, ever.
	return writeJSON(w, http.StatusCreated, struct {
		*accounts.APIKey
		Secret string `json:"secret"`
	}{k, secret})
}

func (app *App) revokeAPIKey(_ *App, w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return tenancy.FieldErrorf(tenancy.CodeInvalid, "id", "an API key id is a UUID")
	}
	t, _ := tenancy.TenantFromContext(r.Context())
	if err := app.acc.RevokeAPIKey(r.Context(), t.ID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (app *App) listMembers(_ *App, w http.ResponseWriter, r *http.Request) error {
	t, _ := tenancy.TenantFromContext(r.Context())
	ms, err := app.acc.Members(r.Context(), t.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": ms})
}

// setMember adds a user (by email) to the tenant or changes their role. Only
// an owner may make owners.
func (app *App) setMember(_ *App, w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	if err := decodeBody(r, &body); err != nil {
		return err
	}
	role, err := accounts.ParseRole(body.Role)
	if err != nil {
		return err
	}
	if role == accounts.RoleOwner && principal(r).Role != accounts.RoleOwner {
		return tenancy.FieldErrorf(tenancy.CodeForbidden, "role", "only an owner may make owners")
	}
	u, err := app.acc.UserByEmail(r.Context(), body.Email)
	if err != nil {
		return err
	}
	t, _ := tenancy.TenantFromContext(r.Context())
	if err := app.acc.SetMembership(r.Context(), t.ID, u.ID, role); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"user_id": u.ID, "email": u.Email, "role": role})
}
