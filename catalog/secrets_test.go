package catalog_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
)

// TestSecretKey: with a secret key, servers' DSNs are stored encrypted and
// read back as they were; without the key, or with another, reading them
// fails saying why; a ciphertext moved to another server's row does not
// decrypt; EncryptServers encrypts what was stored in clear, once.
func TestSecretKey(t *testing.T) {
	t.Parallel()
	b := setup(t) // its server pg-1 was added in clear
	ctx := context.Background()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	withKey := func(k []byte) *catalog.Catalog {
		t.Helper()
		cat := open(t, b.url)
		if err := cat.SetSecretKey(k); err != nil {
			t.Fatal(err)
		}
		return cat
	}
	cat := withKey(key)
	const dsn, app = "postgres://admin:s3cret-pw@db.internal:5432/shared", "postgres://app:app-pw@bouncer:6432/shared"
	if err := cat.AddServer(ctx, &tenancy.Server{Name: "pg-2", DSN: dsn, AppDSN: app}); err != nil {
		t.Fatal(err)
	}
	var stored, storedApp string
	if err := cat.Pool().QueryRow(ctx, `SELECT dsn, app_dsn FROM catalog.servers WHERE name = 'pg-2'`).Scan(&stored, &storedApp); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "enc:v1:") || strings.Contains(stored+storedApp, "pw") || !strings.HasPrefix(storedApp, "enc:v1:") {
		t.Fatalf("stored %q, %q", stored, storedApp)
	}
	if s, err := cat.Server(ctx, "pg-2"); err != nil || s.DSN != dsn || s.AppDSN != app {
		t.Fatalf("read back: %+v %v", s, err)
	}
	if ss, err := cat.Servers(ctx); err != nil || len(ss) != 2 || ss[0].DSN != "postgres://admin@db.invalid:5432/shared" || ss[1].DSN != dsn {
		t.Fatalf("servers: %+v %v", ss, err)
	}

	other := make([]byte, 32)
	for _, c := range []struct {
		name string
		cat  *catalog.Catalog
		says string
	}{{"NoKey", open(t, b.url), "TENANCY_SECRET_KEY"}, {"OtherKey", withKey(other), "cannot be decrypted"}} {
		if _, err := c.cat.Server(ctx, "pg-2"); tenancy.ErrorCode(err) != tenancy.CodeInternal || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: read pg-2: %v", c.name, err)
		}
		if _, err := c.cat.Servers(ctx); err == nil {
			t.Errorf("%s: servers listed", c.name)
		}
		if s, err := c.cat.Server(ctx, b.server); err != nil || s.DSN == "" {
			t.Errorf("%s: the server stored in clear: %+v %v", c.name, s, err)
		}
	}

	// pg-2's ciphertext in pg-1's row: bound to pg-2's name, it does not open.
	if _, err := cat.Pool().Exec(ctx, `INSERT INTO catalog.servers (name, dsn, app_dsn, region, capacity) SELECT 'pg-3', dsn, '', '', 1 FROM catalog.servers WHERE name = 'pg-2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Server(ctx, "pg-3"); err == nil || !strings.Contains(err.Error(), "cannot be decrypted") {
		t.Errorf("a DSN copied to another server: %v", err)
	}
	if _, err := cat.Pool().Exec(ctx, `DELETE FROM catalog.servers WHERE name = 'pg-3'`); err != nil {
		t.Fatal(err)
	}

	if _, err := open(t, b.url).EncryptServers(ctx); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
		t.Errorf("encrypt without a key: %v", err)
	}
	for want := range []int{1, 0} {
		n, err := cat.EncryptServers(ctx)
		if err != nil || n != 1-want {
			t.Fatalf("encrypt servers (run %d): %d %v", want+1, n, err)
		}
	}
	if s, err := cat.Server(ctx, b.server); err != nil || s.DSN != "postgres://admin@db.invalid:5432/shared" {
		t.Errorf("pg-1 after encrypting: %+v %v", s, err)
	}
	var clear int
	if err := cat.Pool().QueryRow(ctx, `SELECT count(*) FROM catalog.servers WHERE dsn NOT LIKE 'enc:v1:%'`).Scan(&clear); err != nil || clear != 0 {
		t.Errorf("%d servers still in clear (%v)", clear, err)
	}

	// Rotation: the new key with the old one as previous reads both, and
	// EncryptServers moves every server to the new key, once.
	newKey := make([]byte, 32)
	newKey[0] = 7
	rotating := open(t, b.url)
	if err := rotating.SetSecretKey(newKey, key); err != nil {
		t.Fatal(err)
	}
	if s, err := rotating.Server(ctx, "pg-2"); err != nil || s.DSN != dsn {
		t.Fatalf("read with the previous key: %+v %v", s, err)
	}
	for want := range []int{2, 0} {
		if n, err := rotating.EncryptServers(ctx); err != nil || n != 2-2*want {
			t.Fatalf("rotate (run %d): %d %v", want+1, n, err)
		}
	}
	if s, err := withKey(newKey).Server(ctx, "pg-2"); err != nil || s.DSN != dsn || s.AppDSN != app {
		t.Errorf("read with the new key alone: %+v %v", s, err)
	}
	if _, err := withKey(key).Server(ctx, "pg-2"); err == nil {
		t.Error("the old key alone still reads a rotated server")
	}
}

func TestParseSecretKey(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	key[0], key[31] = 1, 2
	for _, s := range []string{hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), " " + base64.RawURLEncoding.EncodeToString(key) + "\n"} {
		if k, err := catalog.ParseSecretKey(s); err != nil || string(k) != string(key) {
			t.Errorf("%q: %x %v", s, k, err)
		}
	}
	for _, s := range []string{"", "short", hex.EncodeToString(key[:16]), base64.StdEncoding.EncodeToString(append(key, 0))} {
		if _, err := catalog.ParseSecretKey(s); tenancy.ErrorCode(err) != tenancy.CodeInvalid {
			t.Errorf("%q: %v, want invalid", s, err)
		}
	}
}
