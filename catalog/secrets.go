package catalog

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
)

// sealedPrefix starts a DSN stored encrypted (see SetSecretKey).
const sealedPrefix = "enc:v1:"

// ParseSecretKey reads a secret key of 32 bytes written in hex (64
// characters) or base64, as TENANCY_SECRET_KEY holds it (`openssl rand -hex
// 32` makes one).
func ParseSecretKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	return nil, tenancy.Errorf(tenancy.CodeInvalid, "the secret key must be 32 bytes, in hex (64 characters) or base64; `openssl rand -hex 32` makes one")
}

// SetSecretKey makes the catalog encrypt the DSNs (with their passwords) of
// the servers it records from now on, with AES-256-GCM under key, bound to
// the server's name, and decrypt them when it reads them. previous are older
// keys that still decrypt what they encrypted, while a key is rotated (see
// EncryptServers). DSNs recorded in clear stay readable; EncryptServers
// encrypts them. Without a key, a DSN stored encrypted cannot be read:
// reading its server fails saying so. tenancy stores no key: keep it apart
// from the catalog (in the environment or a secret store), or a copy of the
// catalog gives the servers away with it.
func (c *Catalog) SetSecretKey(key []byte, previous ...[]byte) error {
	var aeads []cipher.AEAD
	for _, k := range append([][]byte{key}, previous...) {
		if len(k) != 32 {
			return tenancy.Errorf(tenancy.CodeInvalid, "a secret key must be 32 bytes, not %d", len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return err
		}
		aeads = append(aeads, aead)
	}
	c.aead, c.previous = aeads[0], aeads[1:]
	return nil
}

// seal returns the DSN of server name as stored: encrypted when the catalog
// has a key, as it is otherwise (and when empty).
func (c *Catalog) seal(name, dsn string) string {
	if c.aead == nil || dsn == "" {
		return dsn
	}
	nonce := make([]byte, c.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(c.aead.Seal(nonce, nonce, []byte(dsn), []byte(name)))
}

// reveal returns a stored DSN of server name as it was recorded, and
// whether it is stored as seal would store it now (in clear without a key,
// encrypted with the current key with one).
func (c *Catalog) reveal(name, stored string) (string, bool, error) {
	sealed, ok := strings.CutPrefix(stored, sealedPrefix)
	if !ok {
		return stored, c.aead == nil || stored == "", nil
	}
	if c.aead == nil {
		return "", false, tenancy.Errorf(tenancy.CodeInternal, "server %q: its DSN is stored encrypted; give this process the secret key (TENANCY_SECRET_KEY)", name)
	}
	b, err := base64.RawStdEncoding.DecodeString(sealed)
	if err == nil {
		for i, aead := range append([]cipher.AEAD{c.aead}, c.previous...) {
			n := aead.NonceSize()
			if len(b) < n {
				break
			}
			if dsn, err := aead.Open(nil, b[:n], b[n:], []byte(name)); err == nil {
				return string(dsn), i == 0, nil
			}
		}
	}
	return "", false, tenancy.Errorf(tenancy.CodeInternal, "server %q: its DSN cannot be decrypted with the secret key given (another key encrypted it, or it was altered)", name)
}

// revealServer decrypts s's DSNs in place.
func (c *Catalog) revealServer(s *tenancy.Server) error {
	var err error
	if s.DSN, _, err = c.reveal(s.Name, s.DSN); err != nil {
		return err
	}
	s.AppDSN, _, err = c.reveal(s.Name, s.AppDSN)
	return err
}

// EncryptServers stores the DSNs of every server encrypted with the
// catalog's current secret key: those in clear, and those encrypted with a
// previous key (rotation: SetSecretKey(new, old), then this). It runs in one
// transaction and returns how many servers it changed; running it again
// changes nothing.
func (c *Catalog) EncryptServers(ctx context.Context) (int, error) {
	if c.aead == nil {
		return 0, tenancy.Errorf(tenancy.CodeInvalid, "no secret key: set TENANCY_SECRET_KEY (32 bytes in hex or base64; `openssl rand -hex 32` makes one)")
	}
	n := 0
	err := c.Tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT name, dsn, app_dsn FROM catalog.servers ORDER BY name FOR UPDATE`)
		if err != nil {
			return dbError("read servers: %w", err)
		}
		type row struct{ name, dsn, app string }
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.name, &x.dsn, &x.app)
		})
		if err != nil {
			return dbError("read servers: %w", err)
		}
		for _, s := range all {
			dsn, dsnCurrent, err := c.reveal(s.name, s.dsn)
			if err != nil {
				return err
			}
			app, appCurrent, err := c.reveal(s.name, s.app)
			if err != nil {
				return err
			}
			if dsnCurrent && appCurrent {
				continue
			}
			if _, err := tx.Exec(ctx, `UPDATE catalog.servers SET dsn = $2, app_dsn = $3 WHERE name = $1`, s.name, c.seal(s.name, dsn), c.seal(s.name, app)); err != nil {
				return dbError("encrypt server %q: %w", s.name, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
