package controlapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzControlAPIQuery reads each list of the control API with any query
// string: never a 5xx but 503, every error a problem+json whose code
// matches its status, and a 400 naming the parameter that is wrong.
func FuzzControlAPIQuery(f *testing.F) {
	for i, q := range []string{"", "kind=%00", "operator=%ff", "tenant=%00", "tenant=acme", "tenant=Acme", "server=%00", "status=%ff",
		"model=%00", "model=cluster", "usage=true", "table=%00", "actor=%ff", "after=-1", "limit=99999999999999999999",
		"since=%00", "since=2026-01-02T03:04:05Z", "=1", "%ff=1", "%00=1", "kind=a%22%3B%20DROP%20SCHEMA%20x%3B%20--"} {
		f.Add(uint8(i), q)
	}
	b := newFuzzAPI(f)
	tn := b.CreateTenant(f, "shared", "pg1")
	paths := []string{"/v1/tenants", "/v1/events", "/v1/operations", "/v1/tenants/" + tn.Slug + "/audit", "/v1/tenants/" + tn.Slug + "/usage"}
	f.Fuzz(func(t *testing.T, which uint8, query string) {
		path := paths[int(which)%len(paths)]
		if _, err := url.ParseQuery(query); err != nil {
			return // the server would not read it either
		}
		if _, err := url.Parse(b.srv.URL + path + "?" + query); err != nil || strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return // nor could a client send it (net/http answers a space in the request line itself)
		}
		resp, out := b.send(t, http.MethodGet, path+"?"+query, "")
		p := checkProblem(t, resp, out, "GET "+path+"?"+query)
		if resp.StatusCode == http.StatusBadRequest && p.Field == "" {
			t.Fatalf("GET %s?%s: %s names no parameter", path, query, out)
		}
	})
}
