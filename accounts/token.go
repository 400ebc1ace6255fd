package accounts

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
)

// tokenPrefix starts every login token, so that tokens and API keys are told
// apart at a glance (and by Authorize).
const tokenPrefix = "v1."

type claims struct {
	Sub uuid.UUID `json:"sub"`
	Iat int64     `json:"iat"`
	Exp int64     `json:"exp"`
}

// b64url decodes strictly: the unused low bits of a token's last character
// must be zero, so a token has one spelling and a changed character is
// always a different (refused) token.
var b64url = base64.RawURLEncoding.Strict()

// IssueToken returns a token that proves, until it expires, that the holder
// logged in as the user. It grants nothing by itself: Authorize checks the
// user's membership in the tenant on every request.
func (a *Accounts) IssueToken(user uuid.UUID) (string, time.Time) {
	now := a.now()
	exp := now.Add(a.ttl)
	body, _ := json.Marshal(claims{Sub: user, Iat: now.Unix(), Exp: exp.Unix()})
	payload := tokenPrefix + b64url.EncodeToString(body)
	return payload + "." + b64url.EncodeToString(a.sign(payload)), exp.Truncate(time.Second)
}

func (a *Accounts) sign(payload string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

var errBadToken = tenancy.Errorf(tenancy.CodeUnauthorized, "the token is invalid or expired: log in again")

// VerifyToken checks a token's signature (in constant time) and expiry, and
// returns the user it names. It does not look the user up.
func (a *Accounts) VerifyToken(token string) (uuid.UUID, error) {
	i := strings.LastIndexByte(token, '.')
	if !strings.HasPrefix(token, tokenPrefix) || i <= len(tokenPrefix) || len(token) > 1024 {
		return uuid.Nil, errBadToken
	}
	payload, sig := token[:i], token[i+1:]
	got, err := b64url.DecodeString(sig)
	if err != nil || !hmac.Equal(got, a.sign(payload)) {
		return uuid.Nil, errBadToken
	}
	body, err := b64url.DecodeString(payload[len(tokenPrefix):])
	if err != nil {
		return uuid.Nil, errBadToken
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil || c.Sub == uuid.Nil || a.now().Unix() >= c.Exp {
		return uuid.Nil, errBadToken
	}
	return c.Sub, nil
}
