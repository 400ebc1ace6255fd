package crm

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
)

// kind is how a field is validated and stored.
type kind int

const (
	kindText  kind = iota // a string of at most max bytes
	kindEmail             // an email address, stored lower-cased
	kindRef               // the id of a row of another table, or null
	kindMoney             // a non-negative amount with at most 2 decimals
	kindEnum              // one of enum
)

// field is one column of a resource, with its JSON name.
type field struct {
	name     string
	kind     kind
	required bool
	max      int      // kindText: most bytes
	ref      string   // kindRef: the table referenced
	enum     []string // kindEnum: the accepted values; the first is the default
	filter   bool     // ?name=value lists only matching rows
}

func (f *field) selectExpr() string {
	if f.kind == kindMoney { // numeric as a string: no float rounding
		return f.name + "::text AS " + f.name
	}
	return f.name
}

func (f *field) invalid(format string, args ...any) error {
	return tenancy.FieldErrorf(tenancy.CodeInvalid, f.name, format, args...)
}

var moneyPattern = regexp.MustCompile(`^[0-9]{1,10}(\.[0-9]{1,2})?$`)

// parseJSON validates a JSON value for the field and returns what to store.
func (f *field) parseJSON(raw json.RawMessage) (any, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if f.required || f.kind == kindMoney || f.kind == kindEnum { // these have defaults instead
			return nil, f.invalid("%s must not be null", f.name)
		}
		return nil, nil
	}
	switch f.kind {
	case kindRef:
		var id int64
		if err := json.Unmarshal(raw, &id); err != nil || id <= 0 {
			return nil, f.invalid("%s must be the id of a %s", f.name, strings.TrimSuffix(f.ref, "s"))
		}
		return id, nil
	case kindMoney:
		var n json.Number
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err == nil {
			switch x := v.(type) {
			case json.Number:
				n = x
			case string:
				n = json.Number(x)
			}
		}
		if !moneyPattern.MatchString(string(n)) {
			return nil, f.invalid("%s must be an amount like 1250.50, not negative, at most 2 decimals", f.name)
		}
		return string(n), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, f.invalid("%s must be a string", f.name)
	}
	return f.parseString(s)
}

// parseQuery validates a query parameter's value for the field.
func (f *field) parseQuery(s string) (any, error) {
	if f.kind == kindRef {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return nil, f.invalid("%s must be the id of a %s", f.name, strings.TrimSuffix(f.ref, "s"))
		}
		return id, nil
	}
	return f.parseString(s)
}

func (f *field) parseString(s string) (any, error) {
	switch f.kind {
	case kindEmail:
		e, err := accounts.NormalizeEmail(s)
		if err != nil {
			return nil, f.invalid("%s must be an address like ada@example.com", f.name)
		}
		return e, nil
	case kindEnum:
		for _, v := range f.enum {
			if s == v {
				return s, nil
			}
		}
		return nil, f.invalid("%s must be one of %s", f.name, strings.Join(f.enum, ", "))
	}
	s = strings.TrimSpace(s)
	switch {
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return nil, f.invalid("%s must be valid UTF-8 text", f.name)
	case s == "" && f.required:
		return nil, f.invalid("%s must not be empty", f.name)
	case len(s) > f.max:
		return nil, f.invalid("%s must be at most %d bytes", f.name, f.max)
	case s == "":
		return nil, nil
	}
	return s, nil
}
