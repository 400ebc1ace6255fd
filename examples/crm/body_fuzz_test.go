package crm

import (
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
)

// FuzzResourceBody gives every resource's create and update decoding any
// body. It must not panic; a refusal is an invalid error naming a field (or
// the body); an accepted body yields only the resource's fields, each value
// as its kind allows (text trimmed, valid UTF-8 without NUL and within its
// size, a normalized email, a positive id, an amount of the documented form,
// an enum value), with every required field on create.
func FuzzResourceBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"Ada","email":"Ada@Example.com","phone":"+44 20","company_id":1}`,
		`{"title":"Deal","contact_id":3,"amount":"1250.50","stage":"won"}`,
		`{"title":"Deal","contact_id":3,"amount":1250.5}`,
		`{"body":"note","deal_id":null}`,
		`{"name":"  "}`, `{"name":"a\u0000b"}`, `{"amount":-1}`, `{"amount":"1e3"}`, `{"stage":"WON"}`,
		`{"contact_id":0}`, `{"contact_id":1.5}`, `{"contact_id":"1"}`, `{"name":"x"} {}`, `[]`, `null`, `{}`,
		`{"name":"Ada","name":"Bob"}`, `{"__proto__":1}`, `{"email":null}`,
	} {
		for i := range resources {
			f.Add(i, s, true)
			f.Add(i, s, false)
		}
	}
	f.Fuzz(func(t *testing.T, i int, body string, create bool) {
		if i < 0 {
			i = -i
		}
		res := resources[i%len(resources)]
		r := httptest.NewRequest("POST", "/"+res.path, strings.NewReader(body))
		out, err := res.decode(r, create)
		if err != nil {
			var fe *tenancy.Error
			if tenancy.ErrorCode(err) != tenancy.CodeInvalid || !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("%s %q: got %v, want an invalid error naming a field", res.path, body, err)
			}
			return
		}
		if !create && len(out) == 0 {
			t.Fatalf("%s %q: an update with nothing to change accepted", res.path, body)
		}
		for name, v := range out {
			fd := res.field(name)
			if fd == nil {
				t.Fatalf("%s %q: accepted unknown field %q", res.path, body, name)
			}
			checkValue(t, res.path, body, fd, v)
		}
		for _, fd := range res.fields {
			if _, ok := out[fd.name]; create && fd.required && !ok {
				t.Fatalf("%s %q: created without required %s", res.path, body, fd.name)
			}
		}
	})
}

func checkValue(t *testing.T, path, body string, f *field, v any) {
	t.Helper()
	bad := func() { t.Fatalf("%s %q: %s accepted as %#v", path, body, f.name, v) }
	if v == nil {
		if f.required || f.kind == kindMoney || f.kind == kindEnum {
			bad()
		}
		return
	}
	switch f.kind {
	case kindRef:
		if id, ok := v.(int64); !ok || id <= 0 {
			bad()
		}
	case kindMoney:
		if s, ok := v.(string); !ok || !moneyPattern.MatchString(s) {
			bad()
		}
	case kindEnum:
		s, ok := v.(string)
		if !ok || !slices.Contains(f.enum, s) {
			bad()
		}
	case kindEmail:
		s, ok := v.(string)
		if !ok {
			bad()
		}
		if n, err := accounts.NormalizeEmail(s); err != nil || n != s {
			bad()
		}
	default:
		s, ok := v.(string)
		if !ok || s == "" || s != strings.TrimSpace(s) || !utf8.ValidString(s) || strings.ContainsRune(s, 0) || len(s) > f.max {
			bad()
		}
	}
}
