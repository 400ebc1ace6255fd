package move_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/move"
)

// TestExportImport exports a tenant and imports it into a fresh installation
// under another model: it reads back identical, audit log included, its
// audit chain verifies, and it works there.
func TestExportImport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := setup(t)
	tn := a.create(t, tenancy.ModelSchema, a.ServerNames[0], 25)
	var archive bytes.Buffer
	man, err := a.mover.Export(ctx, tn.Slug, &archive)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if len(man.Tables) < 5 {
		t.Fatalf("the archive has %d tables", len(man.Tables))
	}
	want := fingerprint(t, a, tn, tn.Placement)

	// Importing where the tenant exists is refused, changing nothing.
	r := bytes.NewReader(archive.Bytes())
	_, err = a.mover.Import(ctx, r, int64(r.Len()), &move.ImportOpts{Slug: "another-slug"})
	tenanttest.WantCode(t, "import where the tenant's id exists", err, tenancy.CodeConflict)

	for _, model := range []tenancy.Model{tenancy.ModelDatabase, tenancy.ModelShared} {
		b := setup(t)
		got, err := b.mover.Import(ctx, r, int64(r.Len()), &move.ImportOpts{Model: model, Server: b.ServerNames[1]})
		if err != nil {
			t.Fatalf("import as %s: %v", model, err)
		}
		if got.ID != tn.ID || got.Slug != tn.Slug || got.Model != model || got.Status != tenancy.StatusActive {
			t.Fatalf("imported as %+v", got)
		}
		if fp := fingerprint(t, b, got, got.Placement); fp != want {
			t.Errorf("imported as %s: the tenant differs:\n%s\nwant\n%s", model, fp, want)
		}
		conn, err := pgx.Connect(ctx, b.Server(got.Placement.Server).URL(got.Placement.Database))
		if err != nil {
			t.Fatal(err)
		}
		v, err := audit.Verify(ctx, conn, got.Placement.Schema, got.ID)
		conn.Close(ctx)
		if err != nil || !v.OK || !v.HeadChecked || v.Entries == 0 {
			t.Errorf("imported as %s: audit %+v (%v)", model, v, err)
		}
		if _, times := tenantRows(t, b, got, "@acme.test"); len(times) != 25 {
			t.Errorf("imported as %s: %d contacts through the router, want 25", model, len(times))
		}
		if err := b.Platform.Router.Tx(tenanttest.Ctx(got), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email) VALUES ($1, 'new', 'new@import.test')`, got.ID)
			return err
		}); err != nil {
			t.Errorf("imported as %s: a write fails: %v", model, err)
		}
	}
}

// TestImportBadArchive: a tampered or foreign archive is refused and leaves
// nothing behind.
func TestImportBadArchive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := setup(t)
	tn := a.create(t, tenancy.ModelShared, a.ServerNames[0], 5)
	var archive bytes.Buffer
	if _, err := a.mover.Export(ctx, tn.Slug, &archive); err != nil {
		t.Fatal(err)
	}
	b := setup(t)
	before := catalogState(t, b)
	for _, c := range []struct {
		name   string
		edit   func(name string, body []byte, man *move.Manifest) []byte
		code   tenancy.Code
		reason string
	}{
		{"NotAnArchive", nil, tenancy.CodeInvalid, ""},
		{"OtherVersion", func(name string, body []byte, man *move.Manifest) []byte {
			man.DataModelVersion = 99
			return body
		}, tenancy.CodeConflict, ""},
		{"TamperedRow", func(name string, body []byte, man *move.Manifest) []byte {
			if name == "tables/contacts.csv" {
				return bytes.Replace(body, []byte("person 3"), []byte("person X"), 1)
			}
			return body
		}, tenancy.CodeInternal, "does not match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := []byte("not a zip")
			if c.edit != nil {
				data = rewrite(t, archive.Bytes(), c.edit)
			}
			_, err := b.mover.Import(ctx, bytes.NewReader(data), int64(len(data)), &move.ImportOpts{Model: tenancy.ModelDatabase})
			tenanttest.WantCode(t, "import", err, c.code)
			if !strings.Contains(err.Error(), c.reason) {
				t.Errorf("got %v, want %q", err, c.reason)
			}
		})
	}
	if after := catalogState(t, b); after != before {
		t.Errorf("a refused import changed the catalog")
	}
}

// rewrite returns the archive with each file passed through edit, and the
// manifest as edit leaves it.
func rewrite(t *testing.T, archive []byte, edit func(string, []byte, *move.Manifest) []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		t.Fatal(err)
	}
	var man move.Manifest
	bodies := map[string][]byte{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		bodies[f.Name] = buf.Bytes()
	}
	if err := json.Unmarshal(bodies["manifest.json"], &man); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		if f.Name == "manifest.json" {
			continue
		}
		w, _ := zw.Create(f.Name)
		w.Write(edit(f.Name, bodies[f.Name], &man))
	}
	w, _ := zw.Create("manifest.json")
	json.NewEncoder(w).Encode(&man)
	zw.Close()
	return out.Bytes()
}
