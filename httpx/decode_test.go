package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
)

type decodeTarget struct {
	Slug  string `json:"slug"`
	Count int    `json:"count"`
	On    bool   `json:"on"`
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		body, field string
	}{
		{`{"slug":"a","count":1,"on":true}`, ""},
		{` {"slug":"a"} ` + "\n", ""},
		{`{"slug":1}`, "slug"},
		{`{"count":"1"}`, "count"},
		{`{"count":1e309}`, "count"},
		{`{"on":null}`, ""},
		{`{"extra":1}`, "extra"},
		{`{"a\"b":1}`, `a"b`},
		{`{"":1}`, "body"},
		{`{"slug":"a"}}`, "body"},
		{`{"slug":"a"}]`, "body"},
		{`{"slug":"a"}{}`, "body"},
		{`{"slug":"a"} x`, "body"},
		{`{"slug":1 },"count":1}`, "body"}, // not one value: the body is wrong before its member
		{`{"extra":1}}`, "body"},
		{`[]`, "body"},
		{`"x"`, "body"},
		{``, "body"},
		{`{`, "body"},
	} {
		var v decodeTarget
		err := DecodeJSON(strings.NewReader(tt.body), &v)
		if tt.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.body, err)
			}
			continue
		}
		var te *tenancy.Error
		if !errors.As(err, &te) || te.Code != tenancy.CodeInvalid || te.Field != tt.field {
			t.Errorf("%s: %#v, want invalid naming %q", tt.body, err, tt.field)
		}
	}
}

// FuzzDecodeJSON: DecodeJSON accepts exactly one JSON value, of the target's
// shape, with nothing after it but white space, and refuses anything else
// with an invalid error that names a field.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"slug":"a","count":1,"on":true}`, `{"slug":1}`, `{"count":1e309}`, `{"x":1}`, `{"a\u0000":1}`,
		`{"slug":"a"}}`, `{"slug":"a"}]`, `{"slug":"a","slug":2}`, `{"SLUG":"a"}`, `null`, ``, ` `, `{"slug":"\ud800"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var v decodeTarget
		err := DecodeJSON(strings.NewReader(body), &v)
		if err != nil {
			var te *tenancy.Error
			if !errors.As(err, &te) || te.Code != tenancy.CodeInvalid || te.Field == "" {
				t.Fatalf("%q: %#v, want an invalid error naming a field", body, err)
			}
			return
		}
		// What was accepted is one JSON value, and encoding/json agrees.
		if !json.Valid([]byte(body)) {
			t.Fatalf("%q accepted but is not one JSON value", body)
		}
		var w decodeTarget
		dec := json.NewDecoder(bytes.NewReader([]byte(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil || w != v {
			t.Fatalf("%q decoded as %+v, encoding/json says %+v (%v)", body, v, w, err)
		}
	})
}
