package httpx

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
)

// FuzzWriteError renders problems for arbitrary codes, messages, request ids
// and request targets: the answer is always one application/problem+json
// document whose status, code and title agree, a known code's message is the
// detail, and the message of an internal or unknown code never reaches the
// client.
func FuzzWriteError(f *testing.F) {
	f.Add("invalid", "bad slug", "req-1", "/t/acme/x?q=1", false)
	f.Add("internal", "password authentication failed for 10.0.0.5", "", "*", true)
	f.Add("rate_limited", "slow down", "x", "/%zz", false)
	f.Add("", "", "", "", false)
	f.Add("not_found", "no tenant \"\x00\xff\"", "\u2028", "/t/ac%2Fme", true)
	f.Add("unavailable", strings.Repeat("é", 300), "a b", "http://evil.example/a", false)
	f.Fuzz(func(t *testing.T, code, message, requestID, target string, wrap bool) {
		var err error = &tenancy.Error{Code: tenancy.Code(code), Message: message}
		if wrap {
			err = fmt.Errorf("outer layer with a secret 10.9.8.7: %w", err)
		}
		r := &http.Request{Method: http.MethodGet, RequestURI: target, URL: &url.URL{Path: target}, Header: http.Header{}}
		r = r.WithContext(tenancy.WithRequestID(r.Context(), requestID))
		w := httptest.NewRecorder()
		WriteError(w, r, err)

		if ct := w.Header().Get("Content-Type"); ct != ContentType {
			t.Fatalf("Content-Type %q", ct)
		}
		body := w.Body.Bytes()
		if len(body) == 0 || body[len(body)-1] != '\n' || strings.Count(string(body), "\n") != 1 {
			t.Fatalf("body is not one JSON line: %q", body)
		}
		var p Problem
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields() // nothing but the problem's members
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		if _, known := statuses[p.Code]; !known {
			t.Fatalf("problem code %q is not in the table", p.Code)
		}
		if p.Status != w.Code || StatusCode(p.Code) != w.Code || p.Title != http.StatusText(w.Code) || p.Type != "about:blank" {
			t.Fatalf("problem %+v for status %d", p, w.Code)
		}
		_, known := statuses[tenancy.Code(code)]
		if known && tenancy.Code(code) != tenancy.CodeInternal {
			want := message
			if want == "" {
				want = code
			}
			if p.Code != tenancy.Code(code) || p.Detail != viaJSON(want) {
				t.Fatalf("code %q message %q: problem %+v", code, message, p)
			}
		} else if p.Code != tenancy.CodeInternal || w.Code != http.StatusInternalServerError || p.Detail != internalDetail {
			// Also: the internal message is nowhere in the body.
			t.Fatalf("code %q: problem %+v, want 500 with the detail %q", code, p, internalDetail)
		}
	})
}

// viaJSON is s as it reads after a trip through JSON (invalid UTF-8 replaced).
func viaJSON(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// FuzzTenantNamed checks what a request may resolve to, with the header and
// the path prefix as sources: a malformed value is answered 400 with a problem
// and never reaches the resolver or the handler, and a request that reaches
// the handler carries exactly the tenant its header (or, without one, its path)
// names, byte for byte.
func FuzzTenantNamed(f *testing.F) {
	f.Add("acme", "/t/other/x")
	f.Add("", "/t/acme/x")
	f.Add("", "/t/ACME/x")
	f.Add("Acme", "/")
	f.Add("acme ", "/t/acme")
	f.Add(" acme", "/t/%61cme/")
	f.Add("acme\x00", "/t/ac%00me")
	f.Add("a--b", "/t/a-b")
	f.Add("", "/t/../acme/")
	f.Add("", "/t/acme%2F..%2Fother/x")
	f.Add("xn--acme", "//t/acme")
	f.Add(strings.Repeat("a", 64), "/t/"+strings.Repeat("a", 63))

	resolver := newMapResolver(
		newTenant("acme", tenancy.StatusActive),
		newTenant("other", tenancy.StatusActive),
		newTenant("a-b", tenancy.StatusActive),
		newTenant(strings.Repeat("a", 63), tenancy.StatusActive),
	)
	mw, err := Middleware(Config{Resolver: resolver, Sources: []Source{FromHeader("X-Tenant"), FromPathPrefix("/t/")}})
	if err != nil {
		f.Fatal(err)
	}
	var reached *tenancy.Tenant
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := tenancy.TenantFromContext(r.Context())
		if !ok {
			panic("handler reached without a tenant")
		}
		reached = id
		w.WriteHeader(http.StatusNoContent)
	}))

	f.Fuzz(func(t *testing.T, header, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			u = &url.URL{Path: target}
		}
		r := &http.Request{Method: http.MethodGet, Host: "example.com", RequestURI: target, URL: u, Header: http.Header{}}
		if header != "" {
			r.Header["X-Tenant"] = []string{header}
		}
		reached = nil
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		for _, s := range resolver.takeAsked() {
			if tenancy.ValidateSlug(s) != nil {
				t.Fatalf("the resolver was asked a malformed slug %q", s)
			}
		}
		named, fromHeader := header, header != ""
		if !fromHeader {
			if rest, ok := strings.CutPrefix(u.Path, "/t/"); ok {
				named, _, _ = strings.Cut(rest, "/")
			}
		}
		if w.Code == http.StatusNoContent {
			if reached == nil || reached.Slug != named && (fromHeader || reached.Slug != "") {
				t.Fatalf("header %q target %q reached tenant %+v", header, target, reached)
			}
			if fromHeader && reached.Slug != header {
				t.Fatalf("header %q served tenant %q", header, reached.Slug)
			}
			if tenancy.ValidateSlug(reached.Slug) != nil {
				t.Fatalf("served a tenant with a malformed slug %q", reached.Slug)
			}
			return
		}
		if reached != nil {
			t.Fatalf("status %d but the handler ran", w.Code)
		}
		if fromHeader && tenancy.ValidateSlug(header) != nil {
			var p Problem
			if w.Code != http.StatusBadRequest || w.Header().Get("Content-Type") != ContentType {
				t.Fatalf("malformed header %q: status %d %q, want 400 problem", header, w.Code, w.Header().Get("Content-Type"))
			}
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Code != tenancy.CodeInvalid || p.Status != 400 {
				t.Fatalf("malformed header %q: problem %+v (%v)", header, p, err)
			}
		}
		if w.Code != http.StatusBadRequest && w.Code != http.StatusNotFound {
			t.Fatalf("header %q target %q: status %d, want 204, 400 or 404", header, target, w.Code)
		}
	})
}
