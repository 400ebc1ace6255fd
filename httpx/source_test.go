package httpx

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
)

// sourceResult is what a source answered, with the error of extract.
type sourceResult struct {
	slug  string
	found bool
	code  tenancy.Code // of the error; "" when none
}

func runSource(t *testing.T, s Source, r *http.Request) (sourceResult, *http.Request) {
	t.Helper()
	slug, found, rest, err := s.(extractor).extract(r)
	got := sourceResult{slug: slug, found: found}
	if err != nil {
		got.code = tenancy.ErrorCode(err)
		if !found {
			t.Errorf("extract returned an error with found=false: %v", err)
		}
	}
	// Slug must agree with extract, and never hand out a valid slug for a
	// malformed request.
	slug2, found2, _ := s.Slug(r)
	if found2 != found {
		t.Errorf("Slug found = %v, extract found = %v", found2, found)
	}
	if err != nil && tenancy.ValidateSlug(slug2) == nil {
		t.Errorf("Slug returned the valid slug %q for a malformed request (%v)", slug2, err)
	}
	if err == nil && slug2 != slug {
		t.Errorf("Slug = %q, extract = %q", slug2, slug)
	}
	return got, rest
}

func TestFromHeader(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		values []string
		want   sourceResult
	}{
		{"Absent", nil, sourceResult{}},
		{"Empty", []string{""}, sourceResult{}},
		{"Slug", []string{"acme"}, sourceResult{slug: "acme", found: true}},
		{"UpperCaseKept", []string{"ACME"}, sourceResult{slug: "ACME", found: true}},
		{"Repeated", []string{"acme", "acme"}, sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"RepeatedDifferent", []string{"acme", "evil"}, sourceResult{found: true, code: tenancy.CodeInvalid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, v := range tt.values {
				r.Header.Add("X-Tenant", v)
			}
			got, _ := runSource(t, FromHeader("x-tenant"), r)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFromSubdomain(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		host string
		want sourceResult
	}{
		{"Subdomain", "acme.example.com", sourceResult{slug: "acme", found: true}},
		{"Port", "acme.example.com:8443", sourceResult{slug: "acme", found: true}},
		{"EmptyPort", "acme.example.com:", sourceResult{slug: "acme", found: true}},
		{"UpperCase", "ACME.Example.COM", sourceResult{slug: "acme", found: true}},
		{"TrailingDot", "acme.example.com.", sourceResult{slug: "acme", found: true}},
		{"TrailingDotAndPort", "acme.example.com.:80", sourceResult{slug: "acme", found: true}},
		// Returned as found; ValidateSlug in Middleware refuses it.
		{"InvalidLabel", "a_b.example.com", sourceResult{slug: "a_b", found: true}},
		{"BaseDomain", "example.com", sourceResult{}},
		{"BaseDomainPortDot", "EXAMPLE.com.:80", sourceResult{}},
		{"OtherDomain", "acme.example.org", sourceResult{}},
		{"SuffixNotLabel", "acmeexample.com", sourceResult{}},
		{"NoHost", "", sourceResult{}},
		{"IPv4", "192.0.2.1", sourceResult{}},
		{"IPv4Port", "192.0.2.1:8080", sourceResult{}},
		{"IPv6", "[2001:db8::1]:8080", sourceResult{}},
		{"Localhost", "localhost:8080", sourceResult{}},
		{"Nested", "a.b.example.com", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"EmptyLabel", ".example.com", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"DoubleDot", "acme..example.com", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"TwoTrailingDots", "acme.example.com..", sourceResult{}},
		{"BadPort", "acme.example.com:http", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"LongPort", "acme.example.com:123456", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"TwoColons", "acme.example.com:80:80", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"BadCharacter", "ac/me.example.com", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"BadCharacterElsewhere", "evil%00.org", sourceResult{found: true, code: tenancy.CodeInvalid}},
		{"Space", "acme .example.com", sourceResult{found: true, code: tenancy.CodeInvalid}},
		// The Kelvin sign lower-cases to 'k' with strings.ToLower.
		{"KelvinSign", "\u212Acme.example.com", sourceResult{found: true, code: tenancy.CodeInvalid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = tt.host
			got, _ := runSource(t, FromSubdomain("Example.com."), r)
			if got != tt.want {
				t.Errorf("host %q: got %+v, want %+v", tt.host, got, tt.want)
			}
		})
	}
}

func TestFromPathPrefix(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		prefix      string
		target      string
		want        sourceResult
		wantPath    string // of the request passed on, when found without error
		wantRawPath string
	}{
		{"Slug", "/t/", "/t/acme", sourceResult{slug: "acme", found: true}, "/", ""},
		{"SlugSlash", "/t/", "/t/acme/", sourceResult{slug: "acme", found: true}, "/", ""},
		{"Rest", "/t/", "/t/acme/contacts?page=2", sourceResult{slug: "acme", found: true}, "/contacts", ""},
		{"DeepRest", "/t/", "/t/acme/contacts/42/", sourceResult{slug: "acme", found: true}, "/contacts/42/", ""},
		{"EncodedSlashInRest", "/t/", "/t/acme/a%2Fb", sourceResult{slug: "acme", found: true}, "/a/b", "/a%2Fb"},
		{"EncodedInRest", "/t/", "/t/acme/caf%C3%A9", sourceResult{slug: "acme", found: true}, "/café", ""},
		{"DoubleSlashInRest", "/t/", "/t/acme//x", sourceResult{slug: "acme", found: true}, "//x", ""},
		{"DotDotInRest", "/t/", "/t/acme/../admin", sourceResult{slug: "acme", found: true}, "/../admin", ""},
		{"EncodedPrefix", "/t/", "/%74/acme/x", sourceResult{slug: "acme", found: true}, "/x", ""},
		{"EncodedSlug", "/t/", "/t/%61cme/x", sourceResult{slug: "acme", found: true}, "/x", ""},
		{"PrefixWithoutSlashes", "t", "/t/acme/x", sourceResult{slug: "acme", found: true}, "/x", ""},
		{"LongPrefix", "/api/v1/t/", "/api/v1/t/acme/x", sourceResult{slug: "acme", found: true}, "/x", ""},
		{"RootPrefix", "/", "/acme/x", sourceResult{slug: "acme", found: true}, "/x", ""},
		// Returned as found; ValidateSlug in Middleware refuses them.
		{"EncodedSlashInSlug", "/t/", "/t/ac%2Fme/x", sourceResult{slug: "ac/me", found: true}, "/x", ""},
		{"DotDotSlug", "/t/", "/t/../x", sourceResult{slug: "..", found: true}, "/x", ""},
		{"UpperCaseSlug", "/t/", "/t/ACME", sourceResult{slug: "ACME", found: true}, "/", ""},
		{"Empty", "/t/", "/t/", sourceResult{found: true, code: tenancy.CodeNoTenant}, "", ""},
		{"EmptySegment", "/t/", "/t//x", sourceResult{found: true, code: tenancy.CodeNoTenant}, "", ""},
		{"PrefixWithoutSlash", "/t/", "/t", sourceResult{}, "", ""},
		{"Outside", "/t/", "/contacts", sourceResult{}, "", ""},
		{"Root", "/t/", "/", sourceResult{}, "", ""},
		{"PrefixOfSegment", "/t/", "/tenants/acme", sourceResult{}, "", ""},
		{"EncodedSlashInPrefix", "/api/t/", "/api%2Ft/acme", sourceResult{}, "", ""},
		{"CaseSensitivePrefix", "/t/", "/T/acme", sourceResult{}, "", ""},
		{"Star", "/t/", "*", sourceResult{}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			u, err := url.ParseRequestURI(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			r.URL, r.RequestURI = u, tt.target
			before := *r.URL

			got, rest := runSource(t, FromPathPrefix(tt.prefix), r)
			if got != tt.want {
				t.Fatalf("%s: got %+v, want %+v", tt.target, got, tt.want)
			}
			if *r.URL != before {
				t.Errorf("the source modified the request URL: %+v, was %+v", *r.URL, before)
			}
			if !got.found || got.code != "" {
				if rest != r {
					t.Errorf("a request not found or malformed should be passed on unchanged")
				}
				return
			}
			if rest.URL.Path != tt.wantPath || rest.URL.RawPath != tt.wantRawPath {
				t.Errorf("passed on Path %q RawPath %q, want %q %q", rest.URL.Path, rest.URL.RawPath, tt.wantPath, tt.wantRawPath)
			}
			if rest.URL.RawQuery != r.URL.RawQuery {
				t.Errorf("query %q lost, got %q", r.URL.RawQuery, rest.URL.RawQuery)
			}
		})
	}
}

func TestSourceConfigValidation(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		source Source
		ok     bool
	}{
		{"Header", FromHeader("X-Tenant"), true},
		{"HeaderSpace", FromHeader("X Tenant"), false},
		{"HeaderEmpty", FromHeader(""), false},
		{"Subdomain", FromSubdomain("app.example.com"), true},
		{"SubdomainLocalhost", FromSubdomain("localhost"), true},
		{"SubdomainEmpty", FromSubdomain(""), false},
		{"SubdomainDot", FromSubdomain("."), false},
		{"SubdomainLeadingDot", FromSubdomain(".example.com"), false},
		{"SubdomainIPv4", FromSubdomain("192.0.2.1"), false},
		{"SubdomainPort", FromSubdomain("example.com:80"), false},
		{"SubdomainHyphen", FromSubdomain("-x.com"), false},
		{"SubdomainUnicode", FromSubdomain("exämple.com"), false},
		{"Path", FromPathPrefix("/t/"), true},
		{"PathRoot", FromPathPrefix("/"), true},
		{"PathEmpty", FromPathPrefix(""), true}, // becomes "/"
		{"PathDoubleSlash", FromPathPrefix("/a//b/"), false},
		{"PathDotDot", FromPathPrefix("/../"), false},
		{"PathEscape", FromPathPrefix("/a%2Fb/"), false},
		{"PathSpace", FromPathPrefix("/a b/"), false},
		{"Nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Middleware(Config{Resolver: newMapResolver(), Sources: []Source{tt.source}})
			if (err == nil) != tt.ok {
				t.Fatalf("Middleware error = %v, want ok = %v", err, tt.ok)
			}
			if err != nil && tenancy.ErrorCode(err) != tenancy.CodeInvalid {
				t.Errorf("error code = %q, want %q", tenancy.ErrorCode(err), tenancy.CodeInvalid)
			}
		})
	}
}

func FuzzFromSubdomain(f *testing.F) {
	for _, h := range []string{
		"acme.example.com", "acme.example.com:8080", "ACME.EXAMPLE.COM.", "a.b.example.com",
		"example.com", "[::1]:80", "192.0.2.1", ".example.com", "acme.example.com:x", "\u212Acme.example.com",
		"xn--caf-dma.example.com", "acme.example.com..", "",
	} {
		f.Add(h)
	}
	s := FromSubdomain("example.com")
	f.Fuzz(func(t *testing.T, host string) {
		r := &http.Request{Host: host, Header: http.Header{}, URL: &url.URL{Path: "/"}}
		got, rest := runSource(t, s, r)
		if rest != r {
			t.Fatalf("the request was not passed on unchanged")
		}
		if !got.found || got.code != "" {
			return
		}
		// A slug found is exactly the one label before the base domain.
		if got.slug == "" || strings.ContainsAny(got.slug, ".:[]") {
			t.Fatalf("host %q: slug %q", host, got.slug)
		}
		h := strings.ToLower(host)
		if i := strings.IndexByte(h, ':'); i >= 0 {
			h = h[:i]
		}
		if strings.TrimSuffix(h, ".") != got.slug+".example.com" {
			t.Fatalf("host %q: slug %q is not its first label", host, got.slug)
		}
	})
}

func FuzzFromPathPrefix(f *testing.F) {
	for _, p := range []string{
		"/t/acme", "/t/acme/", "/t/", "/t//x", "/t/ac%2Fme/x", "/t/acme/a%2Fb", "/%74/acme", "/t",
		"/t/acme/../../x", "/t/%zz", "/t/acme/%", "",
	} {
		f.Add(p)
	}
	s := FromPathPrefix("/t/")
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			// Also try the raw string as an already-decoded Path.
			u = &url.URL{Path: target}
		}
		r := &http.Request{Host: "example.com", Header: http.Header{}, URL: u}
		before := *u
		got, rest := runSource(t, s, r)
		if *r.URL != before {
			t.Fatalf("the source modified the request URL")
		}
		if !got.found || got.code != "" {
			return
		}
		// The escaped path is the prefix, the slug segment and the rest.
		ep, rp := u.EscapedPath(), rest.URL.EscapedPath()
		if !strings.HasPrefix(ep, "/") || !strings.HasPrefix(rp, "/") {
			t.Fatalf("%q: passed on %q", ep, rp)
		}
		seg := strings.TrimSuffix(strings.TrimSuffix(ep, strings.TrimPrefix(rp, "/")), "/")
		i := strings.LastIndexByte(seg, '/')
		if slug, err := url.PathUnescape(seg[i+1:]); err != nil || slug != got.slug {
			t.Fatalf("%q: slug %q, passed on %q", ep, got.slug, rp)
		}
		if p, err := url.PathUnescape(seg[:i+1]); err != nil || p != "/t/" {
			t.Fatalf("%q: prefix %q, passed on %q", ep, p, rp)
		}
		if p, err := url.PathUnescape(rp); err != nil || p != rest.URL.Path {
			t.Fatalf("%q: passed on Path %q RawPath %q", ep, rest.URL.Path, rest.URL.RawPath)
		}
	})
}
