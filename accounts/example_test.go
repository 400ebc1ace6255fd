package accounts_test

import (
	"context"
	"fmt"
	"log"
	"net/http"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/httpx"
	"github.com/tenancyhq/tenancy/platform"
)

// Example authorizes every request of a tenant: the credential must be a
// valid token of a member of the tenant being served, or one of its API keys.
// It needs a PostgreSQL server, so it is compiled but not run; the CRM's
// tests run the same path end to end.
func Example() {
	ctx := context.Background()
	var p *platform.Platform // platform.Open(…)
	acc, err := accounts.New(ctx, accounts.Config{Catalog: p.Catalog})
	if err != nil {
		log.Fatal(err)
	}
	authorize := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t, _ := tenancy.TenantFromContext(r.Context()) // put there by httpx.Middleware
			pr, err := acc.Authorize(r.Context(), t.ID, accounts.BearerToken(r.Header.Get("Authorization")))
			if err != nil {
				httpx.WriteError(w, r, err) // 401 or 403
				return
			}
			next.ServeHTTP(w, r.WithContext(tenancy.WithActor(r.Context(), pr.Actor)))
		})
	}
	_ = authorize
}

func ExampleRole_AtLeast() {
	fmt.Println(accounts.RoleOwner.AtLeast(accounts.RoleAdmin))
	fmt.Println(accounts.RoleMember.AtLeast(accounts.RoleAdmin))
	fmt.Println(accounts.Role("root").AtLeast(accounts.RoleMember))
	// Output:
	// true
	// false
	// false
}

func ExampleBearerToken() {
	fmt.Printf("%q\n", accounts.BearerToken("Bearer v1.abc.def"))
	fmt.Printf("%q\n", accounts.BearerToken("Basic dXNlcjpwYXNz"))
	// Output:
	// "v1.abc.def"
	// ""
}
