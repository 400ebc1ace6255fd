package crm_test

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkRequest measures one authorized request end to end over real HTTP:
// tenant resolution, the credential and membership check in the catalog, and
// a read-only tenant transaction listing 25 contacts, in each model; and the
// same with an API key. Run:
//
//	go test -run '^$' -bench Request -benchtime 2000x ./examples/crm/
func BenchmarkRequest(b *testing.B) {
	tb := setup(b, setupOpts{})
	var csv strings.Builder
	csv.WriteString("name,email\n")
	for i := range 25 {
		fmt.Fprintf(&csv, "Person %d,p%d@example.com\n", i, i)
	}
	for _, tn := range tb.Tenants {
		tb.do(b, tb.owner, "POST", "/t/"+tn.Slug+"/contacts/import", csv.String()).want(b, 200)
	}
	var key struct{ Secret string }
	tb.do(b, tb.owner, "POST", "/t/"+tb.Tenants[0].Slug+"/api-keys", item{"name": "bench"}).want(b, 201).decode(b, &key)
	run := func(name, cred, slug string) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				tb.do(b, cred, "GET", "/t/"+slug+"/contacts", nil).want(b, 200)
			}
		})
	}
	for _, tn := range tb.Tenants {
		run(string(tn.Model)+"/Token", tb.owner, tn.Slug)
	}
	run("shared/APIKey", key.Secret, tb.Tenants[0].Slug)
}
