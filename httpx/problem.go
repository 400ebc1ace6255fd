package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/tenancyhq/tenancy"
)

// ContentType is the media type of every error response: RFC 9457 problem
// details in JSON. It carries no charset parameter because the media type
// defines none (JSON is always UTF-8), and strict clients match it exactly.
const ContentType = "application/problem+json"

// Problem is the body of an error response, as defined by RFC 9457 plus the
// extension members code and request_id. Clients and tests decode it.
type Problem struct {
	// Type is "about:blank": the problem means what its HTTP status means,
	// and Code refines it.
	Type string `json:"type"`
	// Title is the text of the HTTP status (for example "Not Found").
	Title string `json:"title"`
	// Status is the HTTP status code, repeated from the response.
	Status int `json:"status"`
	// Detail explains this occurrence. It is the message of the tenancy error,
	// which is safe to show; for CodeInternal it is only "internal error".
	Detail string `json:"detail,omitempty"`
	// Instance is the escaped path of the request as the client sent it
	// (before any prefix was stripped), without its query.
	Instance string `json:"instance,omitempty"`
	// Code is the tenancy error code, the member clients should switch on.
	Code tenancy.Code `json:"code"`
	// Field names the input field that is wrong, when the error is about
	// one (see tenancy.FieldErrorf), for example "email".
	Field string `json:"field,omitempty"`
	// RequestID is the id of the request (see Config.RequestIDHeader), to
	// quote when reporting the problem.
	RequestID string `json:"request_id,omitempty"`
}

// statuses is the one table that maps error codes to HTTP statuses. A code
// missing here is answered as CodeInternal.
var statuses = map[tenancy.Code]int{
	tenancy.CodeInvalid:        http.StatusBadRequest,
	tenancy.CodeNoTenant:       http.StatusBadRequest,
	tenancy.CodeNotFound:       http.StatusNotFound,
	tenancy.CodeConflict:       http.StatusConflict,
	tenancy.CodeSuspended:      http.StatusForbidden,
	tenancy.CodeGone:           http.StatusGone,
	tenancy.CodeUnavailable:    http.StatusServiceUnavailable,
	tenancy.CodeUnauthorized:   http.StatusUnauthorized,
	tenancy.CodeForbidden:      http.StatusForbidden,
	tenancy.CodeNotImplemented: http.StatusNotImplemented,
	tenancy.CodeRateLimited:    http.StatusTooManyRequests,
	tenancy.CodeInternal:       http.StatusInternalServerError,
}

// StatusCode returns the HTTP status that answers errors with the code:
// 400 for CodeInvalid and CodeNoTenant, 404 CodeNotFound, 409 CodeConflict,
// 403 CodeSuspended, 410 CodeGone, 503 CodeUnavailable, 429 CodeRateLimited
// (with Retry-After: 1 unless the header is already set), 401
// CodeUnauthorized, 403 CodeForbidden, 501 CodeNotImplemented, and 500 for
// CodeInternal and any code it does not know.
func StatusCode(code tenancy.Code) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

const internalDetail = "internal error"

// WriteError answers the request with the problem that err describes, as
// application/problem+json. The status comes from the code of the
// *tenancy.Error that err wraps (see StatusCode); the detail is that error's
// message, which the tenancy packages keep safe to show.
//
// An err without a code, or with CodeInternal or a code this package does not
// know, is answered 500 with the detail "internal error", and err itself is
// logged at level Error on the logger that Middleware (or WithLogger) put into
// the request context; without one, nothing is logged. The request id in the
// body is the one tenancy.WithRequestID put into the request context.
//
// WriteError must be called before anything else is written to w.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := context.Background()
	if r != nil {
		ctx = r.Context()
	}
	if err == nil {
		err = errors.New("httpx: WriteError called with a nil error")
	}

	p := Problem{Type: "about:blank", Code: tenancy.CodeInternal, Detail: internalDetail}
	var te *tenancy.Error
	if errors.As(err, &te) && te.Code != tenancy.CodeInternal {
		if _, known := statuses[te.Code]; known {
			p.Code = te.Code
			p.Detail = te.Error()
			p.Field = te.Field
		}
	}
	p.Status = StatusCode(p.Code)
	p.Title = http.StatusText(p.Status)
	p.RequestID = tenancy.RequestIDFromContext(ctx)
	if r != nil {
		p.Instance = instance(r)
	}

	if p.Status == http.StatusUnauthorized {
		h := w.Header()
		if h.Get("WWW-Authenticate") == "" {
			h.Set("WWW-Authenticate", "Bearer")
		}
	}
	if p.Code == tenancy.CodeInternal {
		attrs := []slog.Attr{slog.String("request_id", p.RequestID), slog.Any("error", err)}
		if t, ok := tenancy.TenantFromContext(ctx); ok {
			attrs = append(attrs, slog.String("tenant", t.Slug))
		}
		if r != nil {
			attrs = append(attrs, slog.String("method", r.Method), slog.String("path", p.Instance))
		}
		loggerFrom(ctx).LogAttrs(ctx, slog.LevelError, "httpx: internal error", attrs...)
	}

	body, merr := json.Marshal(p)
	if merr != nil { // cannot happen: every field is a string or an int
		body = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500,"code":"internal"}`)
	}
	h := w.Header()
	// A Content-Length set for some other body would be wrong; Content-Encoding
	// is kept because a compressing middleware may have set it (see http.Error).
	h.Del("Content-Length")
	h.Set("Content-Type", ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	// 404 and 410 are cacheable by default, but a tenant's status changes.
	h.Set("Cache-Control", "no-store")
	if p.Code == tenancy.CodeRateLimited && h.Get("Retry-After") == "" {
		// The router's cap on concurrent transactions says no more than
		// "later"; one second is a fair guess for a transaction to end.
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// instance returns the escaped path of the request as the client sent it: the
// path of RequestURI, which Middleware and http.StripPrefix leave alone, or of
// URL for requests built without one.
func instance(r *http.Request) string {
	if r.RequestURI != "" {
		if u, err := url.ParseRequestURI(r.RequestURI); err == nil {
			return u.EscapedPath()
		}
	}
	if r.URL != nil {
		return r.URL.EscapedPath()
	}
	return ""
}

type loggerKey struct{}

// WithLogger returns a context whose WriteError calls log internal errors to
// logger. Middleware does this with Config.Logger; handlers outside it may do
// it themselves. A nil logger discards.
func WithLogger(ctx context.Context, logger *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, logger)
}

var discard = slog.New(slog.DiscardHandler)

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, _ := ctx.Value(loggerKey{}).(*slog.Logger); l != nil {
		return l
	}
	return discard
}
