package tenancy

import (
	"errors"
	"fmt"
)

// Code classifies an error for callers and for the HTTP layer, which maps each
// code to one status (see httpx).
type Code string

const (
	// CodeInvalid: the input was malformed (a bad slug, model or argument).
	CodeInvalid Code = "invalid"
	// CodeNoTenant: work that needs a tenant was started without one in its context.
	CodeNoTenant Code = "no_tenant"
	// CodeNotFound: the tenant (or another named thing) does not exist.
	CodeNotFound Code = "not_found"
	// CodeConflict: the thing already exists, or changed under the caller.
	CodeConflict Code = "conflict"
	// CodeSuspended: the tenant exists but is suspended.
	CodeSuspended Code = "suspended"
	// CodeGone: the tenant was deleted.
	CodeGone Code = "gone"
	// CodeUnavailable: the tenant cannot be served right now (provisioning,
	// connection budget exhausted until the caller's deadline).
	CodeUnavailable Code = "unavailable"
	// CodeRateLimited: the tenant is over one of its plan's limits (requests
	// per second, concurrent transactions, a statement cut by the plan's
	// statement timeout); retry later, or do less. HTTP answers 429.
	CodeRateLimited Code = "rate_limited"
	// CodeUnauthorized: the request carries no valid credentials (no token,
	// an expired or forged one, an unknown API key).
	CodeUnauthorized Code = "unauthorized"
	// CodeForbidden: the credentials are valid but do not allow this (no
	// membership in the tenant, a role too low).
	CodeForbidden Code = "forbidden"
	// CodeNotImplemented: the operation exists in the API but this
	// installation does not perform it (yet).
	CodeNotImplemented Code = "not_implemented"
	// CodeInternal: anything else; details are logged, not shown.
	CodeInternal Code = "internal"
)

// Error is an error with a Code. Its message is safe to show to the caller.
type Error struct {
	Code    Code
	Message string
	// Field names the input field that is wrong, for CodeInvalid and
	// CodeConflict errors about one field (for example "email"); empty
	// otherwise. The HTTP layer shows it to the caller.
	Field string
	// Err is the underlying error, if any; it is not shown to callers.
	Err error
}

// Error returns the message.
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return e.Message
}

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNoTenant) and friends match on the code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Field == "" && t.Err == nil && t.Code == e.Code
}

// Errorf returns an *Error with the code and a formatted message. A %w verb
// wraps its argument as Err.
func Errorf(code Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
}

// FieldErrorf returns an *Error with the code, naming the input field that
// is wrong, and a formatted message. A %w verb wraps its argument as Err.
func FieldErrorf(code Code, field, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Field: field, Message: err.Error(), Err: errors.Unwrap(err)}
}

// ErrorField returns the input field that err names, or "".
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// Sentinels to match with errors.Is; they compare by code only.
var (
	ErrInvalid      = &Error{Code: CodeInvalid}
	ErrNoTenant     = &Error{Code: CodeNoTenant}
	ErrNotFound     = &Error{Code: CodeNotFound}
	ErrConflict     = &Error{Code: CodeConflict}
	ErrSuspended    = &Error{Code: CodeSuspended}
	ErrGone         = &Error{Code: CodeGone}
	ErrUnavailable  = &Error{Code: CodeUnavailable}
	ErrUnauthorized = &Error{Code: CodeUnauthorized}
	ErrForbidden    = &Error{Code: CodeForbidden}
	ErrRateLimited  = &Error{Code: CodeRateLimited}
)

// ErrorCode returns the code of err, or CodeInternal when err carries none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
