package httpx

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/tenancyhq/tenancy"
)

// Source extracts a tenant slug from a request. Middleware tries its sources
// in order and uses the first that finds a slug.
//
// Slug returns found=false when the request holds nothing for this source, so
// that the next source is tried. When found is true, slug is what the request
// names, not yet validated: Middleware checks it with tenancy.ValidateSlug
// before anything else sees it, so a source reports a malformed value as found
// with a slug that fails validation (the sources of this package report "").
// rest is the request to pass on to the handler (for example with a path
// prefix stripped); nil means r unchanged. A Source must not modify r.
type Source interface {
	Slug(r *http.Request) (slug string, found bool, rest *http.Request)
}

// extractor is implemented by the sources of this package. Unlike Slug, it
// returns an error that says what is malformed, which Middleware answers with.
type extractor interface {
	extract(r *http.Request) (slug string, found bool, rest *http.Request, err error)
}

// validator is implemented by sources whose constructor argument Middleware
// checks, since the constructors return no error.
type validator interface {
	validate() error
}

// slugOf implements Source.Slug for an extractor.
func slugOf(e extractor, r *http.Request) (string, bool, *http.Request) {
	slug, found, rest, err := e.extract(r)
	if err != nil {
		return "", true, r
	}
	return slug, found, rest
}

// FromHeader returns a Source that reads the slug from the request header
// name, for example "X-Tenant". An absent or empty header is not found; a
// header sent more than once is malformed. The value must be the slug exactly:
// it is not trimmed or lower-cased.
func FromHeader(name string) Source {
	return headerSource{name: http.CanonicalHeaderKey(name)}
}

type headerSource struct{ name string }

func (s headerSource) Slug(r *http.Request) (string, bool, *http.Request) { return slugOf(s, r) }

func (s headerSource) validate() error {
	if !validToken(s.name) {
		return tenancy.Errorf(tenancy.CodeInvalid, "httpx: invalid header name %q", s.name)
	}
	return nil
}

func (s headerSource) extract(r *http.Request) (string, bool, *http.Request, error) {
	vals := r.Header.Values(s.name)
	switch {
	case len(vals) > 1:
		return "", true, r, tenancy.Errorf(tenancy.CodeInvalid, "the %s header is sent more than once", s.name)
	case len(vals) == 0 || vals[0] == "":
		return "", false, r, nil
	}
	return vals[0], true, r, nil
}

// FromSubdomain returns a Source that reads the slug from the host of the
// request: "acme.example.com" names "acme" when baseDomain is "example.com".
//
// The host is matched without its port, case-insensitively and with a
// trailing dot ignored. The base domain itself, other domains and IP literals
// are not found. A host under the base domain with more than one label before
// it ("a.b.example.com"), or any host with characters other than letters,
// digits, '.', '-' and '_', is malformed. baseDomain is checked by Middleware.
func FromSubdomain(baseDomain string) Source {
	return subdomainSource{base: strings.TrimSuffix(asciiLower(baseDomain), ".")}
}

type subdomainSource struct{ base string }

func (s subdomainSource) Slug(r *http.Request) (string, bool, *http.Request) { return slugOf(s, r) }

func (s subdomainSource) validate() error {
	bad := func() error {
		return tenancy.Errorf(tenancy.CodeInvalid, "httpx: invalid base domain %q", s.base)
	}
	if s.base == "" || len(s.base) > 253 {
		return bad()
	}
	labels := strings.Split(s.base, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad()
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return bad()
			}
		}
	}
	// A numeric last label would make the base domain (part of) an IP address.
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return bad()
	}
	return nil
}

func (s subdomainSource) extract(r *http.Request) (string, bool, *http.Request, error) {
	host := r.Host
	if host == "" || host[0] == '[' { // no host, or an IPv6 literal
		return "", false, r, nil
	}
	malformed := func() (string, bool, *http.Request, error) {
		return "", true, r, tenancy.Errorf(tenancy.CodeInvalid, "malformed host %q", truncate(host, 80))
	}
	if i := strings.IndexByte(host, ':'); i >= 0 {
		port := host[i+1:]
		if len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return malformed() // a second colon, or a port that is not a number
		}
		host = host[:i]
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return malformed()
		}
	}
	host = strings.TrimSuffix(asciiLower(host), ".")
	if host == s.base || !strings.HasSuffix(host, "."+s.base) {
		return "", false, r, nil
	}
	sub := host[:len(host)-len(s.base)-1]
	if sub == "" || strings.Contains(sub, ".") {
		return malformed()
	}
	return sub, true, r, nil
}

// FromPathPrefix returns a Source that reads the slug from the path segment
// after prefix, and passes the request on without prefix and slug: with
// prefix "/t/", "/t/acme/contacts" names "acme" and is passed on with URL.Path
// (and URL.RawPath) "/contacts"; "/t/acme" and "/t/acme/" are passed on as "/".
//
// The path is matched segment by segment on its escaped form, so an escaped
// slash ("/t/ac%2Fme/x") stays inside the slug segment and makes it invalid.
// A path outside the prefix, or the prefix without its trailing slash ("/t"),
// is not found; a path under the prefix with an empty slug segment ("/t/",
// "/t//x") names no tenant and is answered 400. prefix gets a leading and a
// trailing slash if it lacks them, and is checked by Middleware.
func FromPathPrefix(prefix string) Source {
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := pathSource{prefix: prefix}
	if p := strings.Trim(prefix, "/"); p != "" {
		s.segs = strings.Split(p, "/")
	}
	return s
}

type pathSource struct {
	prefix string
	segs   []string // the segments of prefix
}

func (s pathSource) Slug(r *http.Request) (string, bool, *http.Request) { return slugOf(s, r) }

func (s pathSource) validate() error {
	for _, seg := range s.segs {
		if seg == "" || seg == "." || seg == ".." || url.PathEscape(seg) != seg {
			return tenancy.Errorf(tenancy.CodeInvalid, "httpx: invalid path prefix %q", s.prefix)
		}
	}
	return nil
}

func (s pathSource) extract(r *http.Request) (string, bool, *http.Request, error) {
	if r.URL == nil {
		return "", false, r, nil
	}
	ep := r.URL.EscapedPath()
	if !strings.HasPrefix(ep, "/") {
		return "", false, r, nil
	}
	segs := strings.Split(ep[1:], "/")
	if len(segs) <= len(s.segs) {
		return "", false, r, nil
	}
	for i, want := range s.segs {
		if got, err := url.PathUnescape(segs[i]); err != nil || got != want {
			return "", false, r, nil
		}
	}
	k := len(s.segs)
	if segs[k] == "" {
		return "", true, r, tenancy.Errorf(tenancy.CodeNoTenant, "the path names no tenant after %q", s.prefix)
	}
	slug, err := url.PathUnescape(segs[k])
	if err != nil {
		return "", true, r, tenancy.Errorf(tenancy.CodeInvalid, "malformed path")
	}
	rawRest := "/" + strings.Join(segs[k+1:], "/")
	rest, err := url.PathUnescape(rawRest)
	if err != nil {
		return "", true, r, tenancy.Errorf(tenancy.CodeInvalid, "malformed path")
	}

	// As http.StripPrefix does: a shallow copy with a copy of the URL.
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = new(url.URL)
	*r2.URL = *r.URL
	r2.URL.Path = rest
	r2.URL.RawPath = ""
	if r2.URL.EscapedPath() != rawRest {
		r2.URL.RawPath = rawRest
	}
	return slug, true, r2, nil
}

// validToken reports whether s is an HTTP token (RFC 9110), as header names are.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// asciiLower lower-cases the ASCII letters of s only: strings.ToLower would
// also fold characters such as the Kelvin sign into ASCII letters.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
