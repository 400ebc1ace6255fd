package httpx

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/tenancyhq/tenancy"
)

// DecodeJSON reads one JSON value from r into v, refusing members v does not
// have and anything but white space after the value. Its error has code
// CodeInvalid and names the field that is wrong: the member of the wrong
// type or the unknown member, else "body" (not JSON, trailing data, too
// large). Bound r first (http.MaxBytesReader).
//
// A body of the wrong shape is the client's mistake, to be answered 400 with
// what to fix; encoding/json alone would accept a second value after the
// first and name no field.
func DecodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var typ *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &typ) && !strings.HasPrefix(err.Error(), unknownField) {
		return tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body must be a JSON object with the documented fields")
	}
	// Decode reads the whole value even past a member of the wrong type, and
	// stops after it; More is false before a stray '}' or ']', so read on:
	// only the end of the body may follow. A body that is not one JSON value
	// is wrong as a whole, whatever its members.
	if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
		return tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body must be one JSON value, with nothing after it")
	}
	if err != nil {
		return memberError(err)
	}
	return nil
}

// unknownField starts encoding/json's error for a member that v lacks.
const unknownField = "json: unknown field "

// memberError names the member of a type or unknown-field error.
func memberError(err error) error {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return tenancy.FieldErrorf(tenancy.CodeInvalid, typ.Field, "%s must be a JSON %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	if quoted, ok := strings.CutPrefix(err.Error(), unknownField); ok {
		if name, uerr := strconv.Unquote(quoted); uerr == nil && name != "" {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, name, "the body has no field %q", name)
		}
	}
	return tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body must be a JSON object with the documented fields")
}

// jsonKind names a Go kind as a JSON type.
func jsonKind(k string) string {
	switch {
	case k == "string":
		return "string"
	case k == "bool":
		return "boolean"
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"), strings.HasPrefix(k, "float"):
		return "number"
	case k == "slice", k == "array":
		return "array"
	default:
		return "object"
	}
}
