package accounts

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// fuzzAccounts returns Accounts that issue and verify tokens without a
// catalog: a fixed key and a fixed clock.
func fuzzAccounts() *Accounts {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Accounts{key: []byte("0123456789abcdef0123456789abcdef"), ttl: time.Hour, now: func() time.Time { return now }}
}

// checkRejected fails unless err is the one error a bad token gets.
func checkRejected(t *testing.T, token string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("token %q accepted", token)
	}
	if err != errBadToken || tenancy.ErrorCode(err) != tenancy.CodeUnauthorized {
		t.Fatalf("token %q: got %v (%s), want the bad-token error", token, err, tenancy.ErrorCode(err))
	}
}

// FuzzVerifyToken gives VerifyToken any string. It must not panic; it must
// refuse with the one unauthorized error, or accept only a token it could
// have issued itself: the signature and the claims spelled exactly as
// IssueToken spells them (one spelling per token), a user, not expired.
func FuzzVerifyToken(f *testing.F) {
	a := fuzzAccounts()
	tok, _ := a.IssueToken(uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"))
	for _, s := range []string{tok, tok + "x", tok[:len(tok)-1], "", "v1.", "v1..", "v1.e30.", "Bearer " + tok,
		"v1.eyJzdWIiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAiLCJleHAiOjB9.AAAA",
		strings.Repeat("v1.", 400)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		user, err := a.VerifyToken(token)
		if err != nil {
			checkRejected(t, token, err)
			if user != uuid.Nil {
				t.Fatalf("token %q refused but named user %s", token, user)
			}
			return
		}
		i := strings.LastIndexByte(token, '.')
		payload, sig := token[:i], token[i+1:]
		if want := b64url.EncodeToString(a.sign(payload)); sig != want {
			t.Fatalf("token %q accepted with the signature spelled %q, not %q", token, sig, want)
		}
		body, _ := b64url.DecodeString(strings.TrimPrefix(payload, tokenPrefix))
		if b64url.EncodeToString(body) != strings.TrimPrefix(payload, tokenPrefix) {
			t.Fatalf("token %q accepted with its claims spelled another way", token)
		}
		if user == uuid.Nil {
			t.Fatalf("token %q accepted for no user", token)
		}
	})
}

// FuzzTokenTamper issues a token for any user and changes one byte of it:
// the changed token must be refused, whatever the byte and wherever it is.
func FuzzTokenTamper(f *testing.F) {
	a := fuzzAccounts()
	f.Add([]byte("0123456789abcdef"), 0, byte('x'))
	f.Add([]byte("0123456789abcdef"), 3, byte('f'))
	f.Add([]byte("0123456789abcdef"), -1, byte('A'))
	f.Add([]byte("0123456789abcdef"), -1, byte('B')) // the signature's last character
	f.Add([]byte("0123456789abcdef"), -44, byte('.'))
	f.Fuzz(func(t *testing.T, id []byte, pos int, b byte) {
		var user uuid.UUID
		copy(user[:], id)
		if user == uuid.Nil {
			return
		}
		tok, _ := a.IssueToken(user)
		if got, err := a.VerifyToken(tok); err != nil || got != user {
			t.Fatalf("issued token %q: %v, %v", tok, got, err)
		}
		if pos < 0 {
			pos += len(tok) // counted from the end
		}
		if pos < 0 || pos >= len(tok) || tok[pos] == b {
			return
		}
		tampered := tok[:pos] + string([]byte{b}) + tok[pos+1:]
		_, err := a.VerifyToken(tampered)
		if err == nil {
			t.Fatalf("token %q, changed at %d from %q to %q, accepted", tok, pos, tok[pos], b)
		}
		if !errors.Is(err, errBadToken) {
			t.Fatalf("tampered token: got %v", err)
		}
	})
}
