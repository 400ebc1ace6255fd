package httpx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
)

func TestStatusCode(t *testing.T) {
	t.Parallel()

	tests := []struct {
		code tenancy.Code
		want int
	}{
		{tenancy.CodeInvalid, 400},
		{tenancy.CodeNoTenant, 400},
		{tenancy.CodeNotFound, 404},
		{tenancy.CodeConflict, 409},
		{tenancy.CodeSuspended, 403},
		{tenancy.CodeGone, 410},
		{tenancy.CodeUnavailable, 503},
		{tenancy.CodeUnauthorized, 401},
		{tenancy.CodeForbidden, 403},
		{tenancy.CodeNotImplemented, 501},
		{tenancy.CodeInternal, 500},
		{tenancy.CodeRateLimited, 429},
		{tenancy.Code("too_busy"), 500}, // not in the table
		{"", 500},
	}
	for _, tt := range tests {
		if got := StatusCode(tt.code); got != tt.want {
			t.Errorf("StatusCode(%q) = %d, want %d", tt.code, got, tt.want)
		}
	}
	if len(statuses) != 12 {
		t.Errorf("the table has %d codes; update this test with the new ones", len(statuses))
	}
}

func TestWriteError(t *testing.T) {
	t.Parallel()

	secret := errors.New("dial tcp 10.0.0.5:5432: password authentication failed")
	tests := []struct {
		name   string
		err    error
		status int
		code   tenancy.Code
		detail string
		logged bool
	}{
		{"Invalid", tenancy.Errorf(tenancy.CodeInvalid, "bad slug"), 400, tenancy.CodeInvalid, "bad slug", false},
		{"NoTenant", tenancy.ErrNoTenant, 400, tenancy.CodeNoTenant, "no_tenant", false},
		{"NotFound", tenancy.Errorf(tenancy.CodeNotFound, "no tenant %q", "x"), 404, tenancy.CodeNotFound, `no tenant "x"`, false},
		{"Conflict", tenancy.Errorf(tenancy.CodeConflict, "slug taken"), 409, tenancy.CodeConflict, "slug taken", false},
		{"Suspended", tenancy.Errorf(tenancy.CodeSuspended, "suspended"), 403, tenancy.CodeSuspended, "suspended", false},
		{"Gone", tenancy.Errorf(tenancy.CodeGone, "deleted"), 410, tenancy.CodeGone, "deleted", false},
		{"Unavailable", tenancy.Errorf(tenancy.CodeUnavailable, "busy"), 503, tenancy.CodeUnavailable, "busy", false},
		{"Unauthorized", tenancy.Errorf(tenancy.CodeUnauthorized, "log in"), 401, tenancy.CodeUnauthorized, "log in", false},
		{"Forbidden", tenancy.Errorf(tenancy.CodeForbidden, "not a member"), 403, tenancy.CodeForbidden, "not a member", false},
		// The detail is the message of the tenancy error, not of what wraps it.
		{"Wrapped", fmt.Errorf("catalog at 10.0.0.5: %w", tenancy.Errorf(tenancy.CodeNotFound, "no tenant")), 404, tenancy.CodeNotFound, "no tenant", false},
		{"WrappingSecret", tenancy.Errorf(tenancy.CodeConflict, "slug taken: %w", secret), 409, tenancy.CodeConflict, "slug taken: " + secret.Error(), false},
		{"Plain", secret, 500, tenancy.CodeInternal, "internal error", true},
		{"Internal", tenancy.Errorf(tenancy.CodeInternal, "catalog: %w", secret), 500, tenancy.CodeInternal, "internal error", true},
		{"UnknownCode", &tenancy.Error{Code: "too_busy", Message: "slow down"}, 500, tenancy.CodeInternal, "internal error", true},
		{"Nil", nil, 500, tenancy.CodeInternal, "internal error", true},
		{"Canceled", context.Canceled, 500, tenancy.CodeInternal, "internal error", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			r := httptest.NewRequest(http.MethodGet, "/t/acme/contacts/a%2Fb?token=secret", nil)
			ctx := tenancy.WithRequestID(r.Context(), "req-1")
			ctx = WithLogger(ctx, slog.New(slog.NewTextHandler(&logs, nil)))
			r = r.WithContext(ctx)
			// As if a prefix had been stripped: the instance is still the
			// path the client sent.
			r.URL.Path, r.URL.RawPath = "/contacts/a/b", "/contacts/a%2Fb"

			w := httptest.NewRecorder()
			w.Header().Set("Content-Length", "12345")
			w.Header().Set("Content-Type", "text/html")
			WriteError(w, r, tt.err)

			p := decodeProblem(t, w, tt.status, tt.code)
			if p.Detail != tt.detail || p.RequestID != "req-1" || p.Instance != "/t/acme/contacts/a%2Fb" {
				t.Errorf("problem = %+v", p)
			}
			h := w.Header()
			if h.Get("Content-Length") != "" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
				t.Errorf("headers = %v", h)
			}
			if logged := logs.Len() > 0; logged != tt.logged {
				t.Errorf("logged = %v, want %v: %s", logged, tt.logged, &logs)
			}
			if tt.logged && tt.err != nil && !strings.Contains(logs.String(), tt.err.Error()) {
				t.Errorf("log lacks the error: %s", &logs)
			}
			if tt.logged && !strings.Contains(logs.String(), "request_id=req-1") {
				t.Errorf("log lacks the request id: %s", &logs)
			}
		})
	}
}

func TestWriteErrorWithoutContext(t *testing.T) {
	t.Parallel()

	// No logger, no request id: nothing is logged, nothing panics.
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	w := httptest.NewRecorder()
	WriteError(w, r, errors.New("boom"))
	if w.Code != 500 || !strings.Contains(w.Body.String(), `"detail":"internal error"`) || strings.Contains(w.Body.String(), "boom") {
		t.Errorf("got %d %s", w.Code, w.Body)
	}

	w = httptest.NewRecorder()
	WriteError(w, nil, tenancy.ErrNotFound)
	if w.Code != 404 {
		t.Errorf("got %d %s", w.Code, w.Body)
	}
}

func TestWriteErrorLogsTenant(t *testing.T) {
	t.Parallel()

	var logs bytes.Buffer
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	ctx := WithLogger(r.Context(), slog.New(slog.NewTextHandler(&logs, nil)))
	ctx = tenancy.WithTenant(ctx, newTenant("acme", tenancy.StatusActive))
	WriteError(httptest.NewRecorder(), r.WithContext(ctx), errors.New("boom"))
	if !strings.Contains(logs.String(), "tenant=acme") {
		t.Errorf("log lacks the tenant: %s", &logs)
	}
}

func TestWriteErrorField(t *testing.T) {
	t.Parallel()

	r := httptest.NewRequest(http.MethodPost, "/contacts", nil)
	r = r.WithContext(tenancy.WithRequestID(r.Context(), "req-2"))
	w := httptest.NewRecorder()
	WriteError(w, r, fmt.Errorf("create contact: %w", tenancy.FieldErrorf(tenancy.CodeInvalid, "email", "email must contain @")))
	p := decodeProblem(t, w, 400, tenancy.CodeInvalid)
	if p.Field != "email" || p.Detail != "email must contain @" {
		t.Errorf("problem = %+v", p)
	}

	// 401 says how to authenticate.
	w = httptest.NewRecorder()
	WriteError(w, r, tenancy.ErrUnauthorized)
	decodeProblem(t, w, 401, tenancy.CodeUnauthorized)
	if got := w.Header().Get("WWW-Authenticate"); got != "Bearer" {
		t.Errorf("WWW-Authenticate = %q", got)
	}
}
