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

type testBundle struct {
	*tenanttest.Bundle
	acc    *accounts.Accounts
	now    time.Time
	a, b   *tenancy.Tenant
	userID uuid.UUID
}

const password = "correct horse battery"

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := context.Background()
	tb := &testBundle{Bundle: tenanttest.Setup(t, nil), now: time.Now()}
	var err error
	tb.acc, err = accounts.New(ctx, accounts.Config{Catalog: tb.Platform.Catalog, TokenTTL: time.Hour, Now: func() time.Time { return tb.now }})
	if err != nil {
		t.Fatal(err)
	}
	tb.a = tb.CreateTenant(t, tenancy.ModelShared, tb.ServerNames[0])
	tb.b = tb.CreateTenant(t, tenancy.ModelShared, tb.ServerNames[0])
	u, err := tb.acc.CreateUser(ctx, &accounts.NewUser{Email: "Ada@Example.com", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	tb.userID = u.ID
	if err := tb.acc.SetMembership(ctx, tb.a.ID, u.ID, accounts.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestAccounts(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := context.Background()

	t.Run("CreateUserValidation", func(t *testing.T) {
		for _, c := range []struct {
			nu    accounts.NewUser
			field string
			code  tenancy.Code
		}{
			{accounts.NewUser{Email: "not-an-email", Password: password}, "email", tenancy.CodeInvalid},
			{accounts.NewUser{Email: "x@example.com", Password: "short"}, "password", tenancy.CodeInvalid},
			{accounts.NewUser{Email: "ADA@example.com", Password: password}, "email", tenancy.CodeConflict},
		} {
			_, err := tb.acc.CreateUser(ctx, &c.nu)
			tenanttest.WantCode(t, c.nu.Email, err, c.code)
			if f := tenancy.ErrorField(err); f != c.field {
				t.Errorf("%s: field %q, want %q", c.nu.Email, f, c.field)
			}
		}
	})

	t.Run("PasswordStoredHashed", func(t *testing.T) {
		var hash string
		if err := tb.Platform.Catalog.Pool().QueryRow(ctx, `SELECT password_hash FROM catalog.users WHERE id = $1`, tb.userID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(hash, "$argon2id$v=19$") || strings.Contains(hash, password) {
			t.Errorf("stored hash %q", hash)
		}
	})

	t.Run("Login", func(t *testing.T) {
		for _, c := range []struct{ email, pw string }{{"ada@example.com", "wrong password"}, {"nobody@example.com", password}} {
			_, _, _, err := tb.acc.Login(ctx, c.email, c.pw)
			tenanttest.WantCode(t, c.email, err, tenancy.CodeUnauthorized)
			if err.Error() != "wrong email or password" {
				t.Errorf("%s: %v tells the two cases apart", c.email, err)
			}
		}
		tok, u, _, err := tb.acc.Login(ctx, " ADA@example.com", password)
		if err != nil || u.ID != tb.userID {
			t.Fatalf("login: %v %v", u, err)
		}
		if id, err := tb.acc.VerifyToken(tok); err != nil || id != tb.userID {
			t.Fatalf("verify: %v %v", id, err)
		}
		// Any change to the token breaks its signature.
		for i := len("v1."); i < len(tok); i += 7 {
			b := []byte(tok)
			b[i] ^= 1
			if _, err := tb.acc.VerifyToken(string(b)); err == nil {
				t.Fatalf("token altered at %d verifies", i)
			}
		}
	})

	t.Run("Authorize", func(t *testing.T) {
		tok, _ := tb.acc.IssueToken(tb.userID)
		p, err := tb.acc.Authorize(ctx, tb.a.ID, tok)
		if err != nil || p.Role != accounts.RoleAdmin || p.Actor.String() != "user:"+tb.userID.String() {
			t.Fatalf("member: %+v %v", p, err)
		}
		// A valid token on a tenant where the user is no member: 403.
		_, err = tb.acc.Authorize(ctx, tb.b.ID, tok)
		tenanttest.WantCode(t, "other tenant", err, tenancy.CodeForbidden)
		_, err = tb.acc.Authorize(ctx, tb.a.ID, "")
		tenanttest.WantCode(t, "no credential", err, tenancy.CodeUnauthorized)
		_, err = tb.acc.Authorize(ctx, tb.a.ID, "v1.garbage.sig")
		tenanttest.WantCode(t, "garbage", err, tenancy.CodeUnauthorized)

		// An expired token.
		old := tb.now
		tb.now = tb.now.Add(2 * time.Hour)
		_, err = tb.acc.Authorize(ctx, tb.a.ID, tok)
		tb.now = old
		tenanttest.WantCode(t, "expired", err, tenancy.CodeUnauthorized)

		// A token signed with another installation's key.
		other, err := accounts.New(ctx, accounts.Config{Catalog: tenanttest.Setup(t, nil).Platform.Catalog})
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := other.IssueToken(tb.userID)
		_, err = tb.acc.Authorize(ctx, tb.a.ID, forged)
		tenanttest.WantCode(t, "forged", err, tenancy.CodeUnauthorized)
	})

	t.Run("RemovedMember", func(t *testing.T) {
		u, err := tb.acc.CreateUser(ctx, &accounts.NewUser{Email: "grace@example.com", Password: password})
		if err != nil {
			t.Fatal(err)
		}
		if err := tb.acc.SetMembership(ctx, tb.b.ID, u.ID, accounts.RoleMember); err != nil {
			t.Fatal(err)
		}
		tok, _ := tb.acc.IssueToken(u.ID)
		if _, err := tb.acc.Authorize(ctx, tb.b.ID, tok); err != nil {
			t.Fatal(err)
		}
		if err := tb.acc.RemoveMembership(ctx, tb.b.ID, u.ID); err != nil {
			t.Fatal(err)
		}
		_, err = tb.acc.Authorize(ctx, tb.b.ID, tok)
		tenanttest.WantCode(t, "removed member, same token", err, tenancy.CodeForbidden)
	})

	t.Run("APIKeys", func(t *testing.T) {
		k, secret, err := tb.acc.CreateAPIKey(ctx, tb.a.ID, "importer", accounts.RoleMember, tb.userID)
		if err != nil {
			t.Fatal(err)
		}
		var stored int
		if err := tb.Platform.Catalog.Pool().QueryRow(ctx, `SELECT count(*) FROM catalog.api_keys
			WHERE position(convert_to($1, 'UTF8') in hash) > 0 OR name = $1 OR prefix = $1`, secret).Scan(&stored); err != nil || stored != 0 {
			t.Fatalf("the secret is stored in clear (%d, %v)", stored, err)
		}
		p, err := tb.acc.Authorize(ctx, tb.a.ID, secret)
		if err != nil || p.Actor.String() != "api_key:"+k.ID.String() || p.Role != accounts.RoleMember {
			t.Fatalf("key on its tenant: %+v %v", p, err)
		}
		_, err = tb.acc.Authorize(ctx, tb.b.ID, secret)
		tenanttest.WantCode(t, "key on another tenant", err, tenancy.CodeForbidden)
		// rand.Text ends in any of A–Z2–7, so flip the last character to one
		// that certainly differs.
		last := "A"
		if strings.HasSuffix(secret, "A") {
			last = "B"
		}
		_, err = tb.acc.Authorize(ctx, tb.a.ID, secret[:len(secret)-1]+last)
		tenanttest.WantCode(t, "wrong secret", err, tenancy.CodeUnauthorized)
		_, _, err = tb.acc.CreateAPIKey(ctx, tb.a.ID, "root", accounts.RoleOwner, tb.userID)
		tenanttest.WantCode(t, "owner key", err, tenancy.CodeInvalid)

		if err := tb.acc.RevokeAPIKey(ctx, tb.a.ID, k.ID); err != nil {
			t.Fatal(err)
		}
		_, err = tb.acc.Authorize(ctx, tb.a.ID, secret)
		tenanttest.WantCode(t, "revoked key", err, tenancy.CodeUnauthorized)
		tenanttest.WantCode(t, "revoke from another tenant", tb.acc.RevokeAPIKey(ctx, tb.b.ID, k.ID), tenancy.CodeNotFound)
	})
}
