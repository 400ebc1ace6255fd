package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"

	"github.com/tenancyhq/tenancy"
)

// User is one person's account, valid in every tenant where they are a member.
type User struct {
	ID        uuid.UUID `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// NewUser describes an account to create.
type NewUser struct {
	Email    string // required; stored lower-cased
	Name     string // display name; default: the part of the email before @
	Password string // required; 10 to 256 characters
}

// MinPasswordLen is the shortest password CreateUser accepts.
const MinPasswordLen = 10

// NormalizeEmail validates an email address and returns it lower-cased, or an
// error naming the field "email".
func NormalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || len(e) > 254 || !strings.Contains(e[strings.LastIndexByte(e, '@')+1:], ".") {
		return "", tenancy.FieldErrorf(tenancy.CodeInvalid, "email", "email must be an address like ada@example.com")
	}
	return e, nil
}

// CreateUser creates an account. The email must be unused (CodeConflict).
func (a *Accounts) CreateUser(ctx context.Context, nu *NewUser) (*User, error) {
	email, err := NormalizeEmail(nu.Email)
	if err != nil {
		return nil, err
	}
	if n := utf8.RuneCountInString(nu.Password); n < MinPasswordLen || len(nu.Password) > 256 {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "password", "password must be %d to 256 characters long", MinPasswordLen)
	}
	name := strings.TrimSpace(nu.Name)
	if name == "" {
		name = email[:strings.IndexByte(email, '@')]
	}
	if len(name) > 200 || !isText(name) {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "name", "name must be valid UTF-8 text of at most 200 bytes")
	}
	hash, err := hashPassword(nu.Password)
	if err != nil {
		return nil, err
	}
	u := &User{ID: uuid.New(), Email: email, Name: name}
	err = a.pool.QueryRow(ctx, `INSERT INTO catalog.users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) RETURNING created_at`,
		u.ID, u.Email, u.Name, hash).Scan(&u.CreatedAt)
	if isUniqueViolation(err) {
		return nil, tenancy.FieldErrorf(tenancy.CodeConflict, "email", "an account with this email already exists")
	}
	if err != nil {
		return nil, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// User returns the account with the given id, unless it is disabled.
func (a *Accounts) User(ctx context.Context, id uuid.UUID) (*User, error) {
	u := &User{}
	err := a.pool.QueryRow(ctx, `SELECT id, email, name, created_at FROM catalog.users WHERE id = $1 AND disabled_at IS NULL`, id).
		Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt)
	if noRows(err) {
		return nil, tenancy.Errorf(tenancy.CodeNotFound, "user %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

// UserByEmail returns the account with the given email, unless it is disabled.
func (a *Accounts) UserByEmail(ctx context.Context, email string) (*User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	u := &User{}
	err = a.pool.QueryRow(ctx, `SELECT id, email, name, created_at FROM catalog.users WHERE email = $1 AND disabled_at IS NULL`, e).
		Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt)
	if noRows(err) {
		return nil, tenancy.FieldErrorf(tenancy.CodeNotFound, "email", "no account with this email")
	}
	if err != nil {
		return nil, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

// errBadLogin is the one answer to a wrong email or a wrong password, so that
// a caller cannot tell which accounts exist.
var errBadLogin = tenancy.Errorf(tenancy.CodeUnauthorized, "wrong email or password")

// Authenticate checks an email and password and returns the account. A wrong
// email and a wrong password get the same error (CodeUnauthorized) after the
// same work.
func (a *Accounts) Authenticate(ctx context.Context, email, password string) (*User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	u := &User{}
	var hash string
	err = a.pool.QueryRow(ctx, `SELECT id, email, name, created_at, password_hash FROM catalog.users WHERE email = $1 AND disabled_at IS NULL`, e).
		Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt, &hash)
	if err != nil && !noRows(err) {
		return nil, fmt.Errorf("read user: %w", err)
	}
	if noRows(err) {
		hash = dummyHash // spend the same time as for a real account
	}
	ok, verr := checkPassword(hash, password)
	if verr != nil {
		return nil, verr
	}
	if !ok || noRows(err) {
		return nil, errBadLogin
	}
	return u, nil
}

// Login authenticates a user and returns a signed token for them.
func (a *Accounts) Login(ctx context.Context, email, password string) (token string, u *User, expires time.Time, err error) {
	u, err = a.Authenticate(ctx, email, password)
	if err != nil {
		return "", nil, time.Time{}, err
	}
	token, expires = a.IssueToken(u.ID)
	return token, u, expires, nil
}

// The argon2id parameters: the minimum OWASP recommends (19 MiB, 2 passes,
// 1 lane). Stored hashes carry their parameters, so they can be raised later.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

var b64 = base64.RawStdEncoding

// hashPassword returns the PHC string of an argon2id hash of password.
func hashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// dummyHash is checked against when the account does not exist.
var dummyHash, _ = hashPassword("not a password of anyone")

// checkPassword reports whether password matches the PHC string, comparing in
// constant time.
func checkPassword(phc, password string) (bool, error) {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, fmt.Errorf("accounts: stored password hash has an unknown format")
	}
	var version int
	var mem, iter uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, fmt.Errorf("accounts: stored password hash has an unknown version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &iter, &threads); err != nil {
		return false, fmt.Errorf("accounts: stored password hash has bad parameters")
	}
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false, fmt.Errorf("accounts: stored password hash is malformed")
	}
	got := argon2.IDKey([]byte(password), salt, iter, mem, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
