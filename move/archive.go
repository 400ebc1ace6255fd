package move

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/dataplane"
	"github.com/tenancyhq/tenancy/provision"
)

// ArchiveFormat names the layout of an export archive: a zip file with one
// CSV file (with a header line) per tenant table under tables/, and
// manifest.json, which describes the tenant, the data model version and each
// table (columns and types, row count, content checksum, sequence positions).
const ArchiveFormat = "tenancy-export/1"

// Manifest describes an export archive.
type Manifest struct {
	Format string `json:"format"`
	Tenant struct {
		ID   uuid.UUID     `json:"id"`
		Slug string        `json:"slug"`
		Name string        `json:"name"`
		Tier tenancy.Tier  `json:"tier"`
		From tenancy.Model `json:"model"` // the model it was exported from
	} `json:"tenant"`
	// DataModelVersion is the data model's version; an archive imports only
	// at the same version.
	DataModelVersion int               `json:"data_model_version"`
	ExportedAt       time.Time         `json:"exported_at"`
	Tables           []ArchivedTable   `json:"tables"` // parents first
	Files            map[string]string `json:"files"`  // table → file in the archive
}

// ArchivedTable is one tenant table of an archive.
type ArchivedTable struct {
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
	Types   []string `json:"types"`
	Rows    int64    `json:"rows"`
	// Checksum is the sum of a 64-bit hash of each row's text, as verification computes it.
	Checksum string `json:"checksum"`
	// Sequences are the last values of the table's sequences, by column.
	Sequences map[string]int64 `json:"sequences,omitempty"`
}

func (a *ArchivedTable) table() *table {
	t := &table{name: a.Name, cols: a.Columns, types: a.Types}
	for c := range a.Sequences {
		t.seqs = append(t.seqs, c)
	}
	return t
}

// Export writes an archive (see ArchiveFormat) of everything the tenant owns
// — every tenant table, soft-deleted rows, the audit log and its chain head,
// the sequences' positions — from one consistent snapshot, while the tenant
// keeps working. The tenant must have storage (active, suspended or deleted)
// at the data model's latest version.
func (m *Mover) Export(ctx context.Context, slug string, w io.Writer) (*Manifest, error) {
	t, err := m.cfg.Catalog.TenantBySlug(ctx, slug)
	if err != nil {
		return nil, err
	}
	switch t.Status {
	case tenancy.StatusActive, tenancy.StatusSuspended, tenancy.StatusDeleted:
	default:
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q is %s: only a tenant with its data in place can be exported", t.Slug, t.Status)
	}
	conn, err := m.connect(ctx, t.Placement.Server, t.Placement.Database)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	st, err := m.cfg.Model.StateTx(ctx, tx, t.Placement.Schema)
	if err != nil {
		return nil, err
	}
	if !st.Current() {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %q %s: run the migrations first", t.Slug, st.Describe(m.cfg.Model.Latest()))
	}
	if err := stable(ctx, tx); err != nil {
		return nil, err
	}
	tables, err := tenantTables(ctx, tx, t.Placement.Schema)
	if err != nil {
		return nil, err
	}
	man := &Manifest{Format: ArchiveFormat, DataModelVersion: st.Version, ExportedAt: time.Now().UTC(), Files: map[string]string{}}
	man.Tenant.ID, man.Tenant.Slug, man.Tenant.Name, man.Tenant.Tier, man.Tenant.From = t.ID, t.Slug, t.Name, t.Tier, t.Model
	zw := zip.NewWriter(w)
	src := side{tx, t.Placement.Schema}
	for _, tb := range tables {
		s, err := tableSum(ctx, src, tb, t.ID, "", true)
		if err != nil {
			return nil, err
		}
		a := ArchivedTable{Name: tb.name, Columns: tb.cols, Types: tb.types, Rows: s.Rows, Checksum: s.Hash}
		for _, c := range tb.seqs {
			var last *int64
			if err := tx.QueryRow(ctx, `SELECT pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass)`,
				dataplane.Ident(src.schema, tb.name), c).Scan(&last); err != nil {
				return nil, fmt.Errorf("read the sequence of %s.%s: %w", tb.name, c, err)
			}
			if last != nil {
				if a.Sequences == nil {
					a.Sequences = map[string]int64{}
				}
				a.Sequences[c] = *last
			}
		}
		file := "tables/" + tb.name + ".csv"
		fw, err := zw.Create(file)
		if err != nil {
			return nil, err
		}
		if _, err := tx.Conn().PgConn().CopyTo(ctx, fw, "COPY (SELECT "+tb.colList("s.")+" FROM "+dataplane.Ident(src.schema, tb.name)+
			" s WHERE s.tenant_id = "+tenantLiteral(t.ID)+") TO STDOUT (FORMAT csv, HEADER)"); err != nil {
			return nil, fmt.Errorf("export %s: %w", tb.name, err)
		}
		man.Tables, man.Files[tb.name] = append(man.Tables, a), file
	}
	fw, err := zw.Create("manifest.json")
	if err != nil {
		return nil, err
	}
	enc := json.NewEncoder(fw)
	enc.SetIndent("", "  ")
	if err := enc.Encode(man); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("write the archive: %w", err)
	}
	return man, tx.Commit(ctx)
}

// ImportOpts say where an archive is imported. Empty fields take the
// archive's values (slug, model) or the first server by name.
type ImportOpts struct {
	Slug   string
	Model  tenancy.Model
	Server string
	Tier   tenancy.Tier
}

// Import restores an archive written by Export as a new tenant of this
// installation, in any model on any server, with the tenant's id (the audit
// chain covers it, so it verifies only under that id). The archive must be
// at the data model's latest version. Everything is loaded and verified
// against the archive's counts and checksums in the transaction that
// completes the tenant's storage; on any failure nothing is left. It fails
// with CodeConflict when the slug or the tenant's id exists here.
func (m *Mover) Import(ctx context.Context, r io.ReaderAt, size int64, opts *ImportOpts) (*tenancy.Tenant, error) {
	if opts == nil {
		opts = &ImportOpts{}
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "not an export archive: %w", err)
	}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[f.Name] = f
	}
	var man Manifest
	if err := readJSON(files["manifest.json"], &man); err != nil || man.Format != ArchiveFormat {
		return nil, tenancy.Errorf(tenancy.CodeInvalid, "not an export archive of format %s (manifest.json: %v)", ArchiveFormat, err)
	}
	if man.DataModelVersion != m.cfg.Model.Latest() {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "the archive is at data model version %d and this installation at %d", man.DataModelVersion, m.cfg.Model.Latest())
	}
	t := &tenancy.Tenant{ID: man.Tenant.ID, Slug: opts.Slug, Name: man.Tenant.Name, Tier: opts.Tier, Model: opts.Model, Status: tenancy.StatusProvisioning}
	if t.Slug == "" {
		t.Slug = man.Tenant.Slug
	}
	if t.Tier == "" {
		t.Tier = man.Tenant.Tier
	}
	if t.Model == "" {
		t.Model = man.Tenant.From
	}
	if err := tenancy.ValidateSlug(t.Slug); err != nil {
		return nil, err
	}
	if t.Model, err = tenancy.ParseModel(string(t.Model)); err != nil {
		return nil, err
	}
	s, err := m.importServer(ctx, opts.Server)
	if err != nil {
		return nil, err
	}
	if _, err := m.cfg.Catalog.Tenant(ctx, t.ID); err == nil {
		return nil, tenancy.Errorf(tenancy.CodeConflict, "tenant %s (%s) exists in this installation", t.ID, man.Tenant.Slug)
	} else if !errors.Is(err, tenancy.ErrNotFound) {
		return nil, err
	}
	if t.Placement, err = provision.Placement(s, t, t.Model); err != nil {
		return nil, err
	}
	if err := m.cfg.Catalog.CreateTenant(ctx, t); err != nil {
		return nil, err
	}
	load := func(tx pgx.Tx) error { return loadArchive(ctx, tx, t, &man, files) }
	if err := m.cfg.Provisioner.CreateStorage(ctx, s, t, load); err != nil {
		cctx := context.WithoutCancel(ctx)
		if !errors.Is(err, provision.ErrStorageExists) { // someone else's: not ours to drop
			if dErr := m.dropStorage(cctx, t.ID, t.Model, t.Placement, nil, ""); dErr != nil {
				err = fmt.Errorf("%w (and removing what was created failed: %v)", err, dErr)
			}
		}
		if dErr := m.cfg.Catalog.DeleteTenantRow(cctx, t.ID); dErr != nil {
			err = fmt.Errorf("%w (and removing the catalog row failed: %v)", err, dErr)
		}
		return nil, fmt.Errorf("import tenant %q: %w", t.Slug, err)
	}
	if err := m.cfg.Catalog.RecordEvent(ctx, &catalog.Event{Kind: "imported", TenantID: t.ID, TenantSlug: t.Slug},
		map[string]any{"model": t.Model, "placement": t.Placement, "exported_at": man.ExportedAt, "from": man.Tenant.From}); err != nil {
		return nil, err
	}
	return m.cfg.Catalog.SetStatus(ctx, t.ID, tenancy.StatusActive, tenancy.StatusProvisioning)
}

// importServer is the named server, or the first by name.
func (m *Mover) importServer(ctx context.Context, name string) (*tenancy.Server, error) {
	if name != "" {
		if err := tenancy.ValidateName("server name", name); err != nil {
			return nil, err
		}
		return m.cfg.Catalog.Server(ctx, name)
	}
	servers, err := m.cfg.Catalog.Servers(ctx)
	if err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		return nil, tenancy.Errorf(tenancy.CodeUnavailable, "no server in the catalog: add one first")
	}
	return servers[0], nil
}

// loadArchive copies the archive's tables into the tenant's new storage in
// tx, moves the sequences and verifies every table against the manifest.
func loadArchive(ctx context.Context, tx pgx.Tx, t *tenancy.Tenant, man *Manifest, files map[string]*zip.File) error {
	schema := t.Placement.Schema
	if t.Model == tenancy.ModelShared {
		if err := deleteRows(ctx, tx, schema, t.ID); err != nil {
			return err
		}
	}
	if err := replica(ctx, tx); err != nil {
		return err
	}
	here, err := tenantTables(ctx, tx, schema)
	if err != nil {
		return err
	}
	var archived []*table
	for i := range man.Tables {
		archived = append(archived, man.Tables[i].table())
	}
	if err := sameTables(archived, here); err != nil {
		return err
	}
	dst := side{tx, schema}
	for i, a := range man.Tables {
		f := files[man.Files[a.Name]]
		if f == nil {
			return tenancy.Errorf(tenancy.CodeInvalid, "the archive lacks the file of table %s", a.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		_, err = tx.Conn().PgConn().CopyFrom(ctx, rc, "COPY "+dataplane.Ident(schema, a.Name)+" ("+archived[i].colList("")+") FROM STDIN (FORMAT csv, HEADER)")
		rc.Close()
		if err != nil {
			return fmt.Errorf("import %s: %w", a.Name, err)
		}
		for c, last := range a.Sequences {
			if _, err := tx.Exec(ctx, `SELECT setval(s, greatest($3, coalesce(pg_sequence_last_value(s), 0)))
				FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS s) x`, dataplane.Ident(schema, a.Name), c, last); err != nil {
				return fmt.Errorf("move the sequence of %s.%s: %w", a.Name, c, err)
			}
		}
	}
	if err := stable(ctx, tx); err != nil {
		return err
	}
	for i, a := range man.Tables {
		got, err := tableSum(ctx, dst, archived[i], t.ID, "", true)
		if err != nil {
			return err
		}
		if got.Rows != a.Rows || got.Hash != a.Checksum {
			return fmt.Errorf("%w: table %s has %d rows (checksum %s) in the archive and %d (checksum %s) imported",
				ErrMismatch, a.Name, a.Rows, a.Checksum, got.Rows, got.Hash)
		}
	}
	return nil
}

func readJSON(f *zip.File, v any) error {
	if f == nil {
		return errors.New("missing")
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return json.NewDecoder(io.LimitReader(rc, 16<<20)).Decode(v)
}
