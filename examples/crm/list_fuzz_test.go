package crm_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy/httpx"
)

// FuzzCRMList lists each resource with any query string: never a 5xx, and
// an error is a problem+json; a 400 names the parameter that is wrong.
func FuzzCRMList(f *testing.F) {
	for i, q := range []string{"", "q=ada", "q=%00", "q=%ff", "q=%25", "q=_", "q=%5C", "limit=0", "limit=101", "limit=-1",
		"limit=99999999999999999999", "cursor=aWQ6MQ", "cursor=%00", "cursor=aWQ6LTE", "deleted=only", "deleted=x",
		"name=%00", "email=%ff", "email=ADA@EXAMPLE.COM", "company_id=0", "company_id=9223372036854775808", "stage=won",
		"stage=%00", "contact_id=1&contact_id=2", "x=1", "=1", "q", "q=a&q=b", "domain=a%22%3B%20DROP%20SCHEMA%20x%3B%20--"} {
		f.Add(uint8(i), q)
	}
	b := setup(f, setupOpts{})
	paths := []string{"companies", "contacts", "deals", "notes"}
	f.Fuzz(func(t *testing.T, which uint8, query string) {
		tn := b.Tenants[int(which/4)%len(b.Tenants)]
		path := "/t/" + tn.Slug + "/" + paths[int(which)%len(paths)]
		if _, err := url.ParseQuery(query); err != nil || strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return // the server would not read it either (net/http answers a space in the request line itself)
		}
		if _, err := url.Parse(b.srv.URL + "/?" + query); err != nil {
			return // nor could a client send it
		}
		r := b.do(t, b.owner, http.MethodGet, path+"?"+query, nil)
		if r.status >= 500 {
			t.Fatalf("%s?%s: %d %s", path, query, r.status, r.body)
		}
		if r.status < 400 {
			return
		}
		p := r.problem
		if r.header.Get("Content-Type") != httpx.ContentType || p.Status != r.status || httpx.StatusCode(p.Code) != r.status {
			t.Fatalf("%s?%s: %d %s", path, query, r.status, r.body)
		}
		if r.status == http.StatusBadRequest && p.Field == "" {
			t.Fatalf("%s?%s: %s names no parameter", path, query, r.body)
		}
	})
}
