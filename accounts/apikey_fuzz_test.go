package accounts_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
)

// FuzzAuthorize gives Authorize any credential, as it comes from an
// Authorization header, for a tenant with one API key and one member. It
// must not fail as an internal error: a credential is accepted only as the
// key's secret or the member's token, exactly, and anything else is refused
// as unauthorized (or forbidden, for a key of another tenant).
func FuzzAuthorize(f *testing.F) {
	ctx := context.Background()
	b := tenanttest.Setup(f, nil)
	acc, err := accounts.New(ctx, accounts.Config{Catalog: b.Platform.Catalog, TokenTTL: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	tn := b.CreateTenant(f, tenancy.ModelShared, b.ServerNames[0])
	other := b.CreateTenant(f, tenancy.ModelShared, b.ServerNames[0])
	u, err := acc.CreateUser(ctx, &accounts.NewUser{Email: "ada@example.com", Password: password})
	if err != nil {
		f.Fatal(err)
	}
	if err := acc.SetMembership(ctx, tn.ID, u.ID, accounts.RoleMember); err != nil {
		f.Fatal(err)
	}
	_, key, err := acc.CreateAPIKey(ctx, tn.ID, "ci", accounts.RoleMember, uuid.Nil)
	if err != nil {
		f.Fatal(err)
	}
	_, otherKey, err := acc.CreateAPIKey(ctx, other.ID, "ci", accounts.RoleMember, uuid.Nil)
	if err != nil {
		f.Fatal(err)
	}
	token, _ := acc.IssueToken(u.ID)

	pub := key[:len("tk_")+12]
	for _, s := range []string{key, otherKey, token, key + "x", key[:len(key)-1], strings.ToUpper(key), pub + "_", pub, "tk_", "tk__",
		"tk_" + strings.Repeat("\xff", 12) + "_x", "tk_" + strings.Repeat("\x00", 12) + "_x", "tk_" + strings.Repeat("é", 6) + "_x",
		"tk_' OR 1=1 --_x", "tk_%%%%%%%%%%%%_x", pub + "_" + strings.Repeat("a", 300), "Bearer " + key, " " + key, "", "v1.", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, credential string) {
		p, err := acc.Authorize(ctx, tn.ID, credential)
		if err == nil {
			if credential != key && credential != token {
				t.Fatalf("credential %q accepted as %+v", credential, p)
			}
			return
		}
		switch code := tenancy.ErrorCode(err); {
		case credential == key || credential == token:
			t.Fatalf("the tenant's own credential refused: %v", err)
		case code == tenancy.CodeForbidden && credential == otherKey:
		case code != tenancy.CodeUnauthorized:
			t.Fatalf("credential %q: %v (code %s), want unauthorized", credential, err, code)
		}
	})
}
