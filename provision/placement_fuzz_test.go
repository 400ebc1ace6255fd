package provision_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/provision"
)

// maxIdentifier is the longest name PostgreSQL keeps (NAMEDATALEN - 1
// bytes); it silently truncates a longer one.
const maxIdentifier = 63

// FuzzPlacementNames derives the schema and database names of two tenants
// from any two slugs. A slug that ValidateSlug refuses never gets this far;
// for valid ones, each name is a lower-case identifier PostgreSQL keeps whole
// (not truncated, so that it cannot become another tenant's), and two
// different slugs never share a schema or a database.
func FuzzPlacementNames(f *testing.F) {
	long := "a" + strings.Repeat("b", 61)
	for _, s := range [][2]string{
		{"acme", "acme-corp"}, {"a-b", "ab"}, {"ab", "a-b-c"}, {long + "c", long + "d"}, {long + "c", long},
		{strings.Repeat("x", 56) + "-1", strings.Repeat("x", 56) + "-2"}, {"public", "pg-catalog"}, {"tenant-x", "x"},
		{`a"; DROP SCHEMA x; --`, "a"}, {"Acme", "acme"}, {"a--b", "a-b"},
	} {
		f.Add(s[0], s[1])
	}
	srv := &tenancy.Server{Name: "pg1", DSN: "postgres://localhost/shared"}
	f.Fuzz(func(t *testing.T, a, b string) {
		// Random text is seldom a slug: spell it in the slug alphabet
		// first, so that long slugs alike in most bytes come up often.
		if tenancy.ValidateSlug(a) != nil || tenancy.ValidateSlug(b) != nil {
			a, b = inSlugAlphabet(a), inSlugAlphabet(b)
		}
		if tenancy.ValidateSlug(a) != nil || tenancy.ValidateSlug(b) != nil {
			return
		}
		names := map[tenancy.Model][2]string{}
		for _, m := range []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase} {
			var got [2]string
			for i, slug := range []string{a, b} {
				p, err := provision.Placement(srv, &tenancy.Tenant{ID: uuid.New(), Slug: slug, Model: m}, m)
				if err != nil {
					t.Fatal(err)
				}
				name := p.Schema
				if m == tenancy.ModelDatabase {
					name = p.Database
				}
				if len(name) > maxIdentifier || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" || name == "" {
					t.Fatalf("slug %q: %s name %q is not a whole lower-case identifier", slug, m, name)
				}
				got[i] = name
			}
			names[m] = got
			if a != b && got[0] == got[1] {
				t.Fatalf("slugs %q and %q share the %s name %q", a, b, m, got[0])
			}
		}
	})
}

// inSlugAlphabet maps each byte of s to a slug character, keeping 63.
func inSlugAlphabet(s string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
	out := make([]byte, 0, min(len(s), 63))
	for i := 0; i < len(s) && i < 63; i++ {
		out = append(out, alphabet[int(s[i])%len(alphabet)])
	}
	return string(out)
}

// TestCreateLongSlugs: two tenants whose 63-byte slugs differ only at the
// end each get a schema (or database) of their own, under the very name the
// catalog records; PostgreSQL keeps only 63 bytes of a name.
func TestCreateLongSlugs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stem := strings.Repeat("l", 60)
	for i, m := range []tenancy.Model{tenancy.ModelSchema, tenancy.ModelDatabase} {
		var names []string
		for _, end := range []string{"-a", "-b"} {
			slug := fmt.Sprintf("%s%d%s", stem, i, end)
			tn, err := b.create(t, b.Platform.Provisioner, &provision.CreateOpts{Slug: slug, Model: m, Server: b.server})
			if err != nil {
				t.Fatalf("create %s tenant %s: %v", m, slug, err)
			}
			name, query := tn.Placement.Schema, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname::text = $1::text)`
			if m == tenancy.ModelDatabase {
				name, query = tn.Placement.Database, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname::text = $1::text)`
			}
			if !b.exists(t, query, name) {
				t.Fatalf("%s tenant %s: no storage named %q", m, slug, name)
			}
			names = append(names, name)
		}
		if names[0] == names[1] {
			t.Fatalf("two %s tenants share the name %q", m, names[0])
		}
	}
}

// TestCreateRefusesBadNameAndTier: a name PostgreSQL text cannot hold and a
// tier SetTier would refuse are refused by Create too, naming the field, and
// leave nothing behind.
func TestCreateRefusesBadNameAndTier(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, c := range []struct {
		opts  provision.CreateOpts
		field string
	}{
		{provision.CreateOpts{Slug: "bad-name", Name: "a\x00b"}, "name"},
		{provision.CreateOpts{Slug: "bad-utf8", Name: "a\xffb"}, "name"},
		{provision.CreateOpts{Slug: "long-name", Name: strings.Repeat("n", 201)}, "name"},
		{provision.CreateOpts{Slug: "bad-tier", Tier: `a"; DROP SCHEMA x; --`}, "tier"},
		{provision.CreateOpts{Slug: "upper-tier", Tier: "Pro"}, "tier"},
	} {
		for _, m := range tenancy.Models {
			c.opts.Model, c.opts.Server = m, b.server
			_, err := b.create(t, b.Platform.Provisioner, &c.opts)
			if tenancy.ErrorCode(err) != tenancy.CodeInvalid || tenancy.ErrorField(err) != c.field {
				t.Fatalf("create %+v: %v (field %q), want invalid naming %s", c.opts, err, tenancy.ErrorField(err), c.field)
			}
			b.noTrace(t, c.opts.Slug, uuid.Nil)
		}
	}
}
