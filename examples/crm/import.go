package crm

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/jobs"
	"github.com/tenancyhq/tenancy/platform"
)

// ImportRow is one contact of a CSV import, validated.
type ImportRow struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone,omitempty"`
}

// ImportArgs is the background job of a CSV import: the rows, validated
// before the job was enqueued. It names no tenant: the job runs under the
// tenant it was enqueued under (see the jobs package).
type ImportArgs struct {
	Rows []ImportRow `json:"rows"`
}

// Kind names the job for River.
func (ImportArgs) Kind() string { return "crm.import_contacts" }

// AddWorkers registers the CRM's background workers.
func AddWorkers(workers *river.Workers, p *platform.Platform) {
	jobs.AddWorker(workers, p, func(ctx context.Context, job *river.Job[ImportArgs]) error {
		_, err := ImportContacts(ctx, p.Router.Tx, job.Args.Rows)
		return err
	})
}

// ImportResult says what an import did.
type ImportResult struct {
	Imported int `json:"imported"`
	// Skipped counts rows whose email a contact already has.
	Skipped int `json:"skipped"`
}

const maxImportRows = 10000

// parseImport reads a CSV of contacts with the header name,email[,phone], and
// validates every row before anything is written: a bad row rejects the
// whole file, naming the row and the column.
func parseImport(r io.Reader) ([]ImportRow, error) {
	bad := func(format string, args ...any) error {
		return tenancy.FieldErrorf(tenancy.CodeInvalid, "csv", format, args...)
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, bad("the CSV must start with the header name,email[,phone]")
	}
	cols := map[string]int{}
	for i, h := range header {
		cols[strings.ToLower(strings.TrimSpace(h))] = i
	}
	ni, ok1 := cols["name"]
	ei, ok2 := cols["email"]
	pi, hasPhone := cols["phone"]
	if !ok1 || !ok2 {
		return nil, bad("the CSV header must name the columns name and email")
	}
	contacts := resourceByPath("contacts")
	var rows []ImportRow
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, bad("line %d: %v", line, err)
		}
		if len(rows) == maxImportRows {
			return nil, bad("at most %d contacts per import", maxImportRows)
		}
		get := func(i int) string {
			if i < len(rec) {
				return rec[i]
			}
			return ""
		}
		var row ImportRow
		for _, c := range []struct {
			field string
			col   int
			dst   *string
		}{{"name", ni, &row.Name}, {"email", ei, &row.Email}, {"phone", pi, &row.Phone}} {
			if c.field == "phone" && !hasPhone {
				continue
			}
			v, err := contacts.field(c.field).parseString(get(c.col))
			if err != nil {
				return nil, bad("line %d: %v", line, err)
			}
			if s, ok := v.(string); ok {
				*c.dst = s
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, bad("the CSV has no contacts")
	}
	return rows, nil
}

// ImportContacts inserts rows as contacts of the tenant of ctx, in one
// transaction, skipping emails a contact already has. Background jobs call it
// with the tenant they were enqueued under.
func ImportContacts(ctx context.Context, tx func(context.Context, func(pgx.Tx) error) error, rows []ImportRow) (ImportResult, error) {
	t, ok := tenancy.TenantFromContext(ctx)
	if !ok {
		return ImportResult{}, tenancy.ErrNoTenant
	}
	var res ImportResult
	err := tx(ctx, func(tx pgx.Tx) error {
		res = ImportResult{}
		for _, r := range rows {
			tag, err := tx.Exec(ctx, `INSERT INTO contacts (tenant_id, name, email, phone) VALUES ($1, $2, $3, NULLIF($4, ''))
				ON CONFLICT (tenant_id, email) WHERE deleted_at IS NULL DO NOTHING`, t.ID, r.Name, r.Email, r.Phone)
			if err != nil {
				return fmt.Errorf("import %s: %w", r.Email, err)
			}
			if tag.RowsAffected() == 1 {
				res.Imported++
			} else {
				res.Skipped++
			}
		}
		return nil
	})
	return res, err
}

func (app *App) importContacts(_ *App, w http.ResponseWriter, r *http.Request) error {
	rows, err := parseImport(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return err
	}
	if app.jobs != nil {
		res, err := app.jobs.Insert(r.Context(), ImportArgs{Rows: rows}, nil)
		if err != nil {
			return err
		}
		// The job's state is at /t/{slug}/jobs/{id}, beside /t/{slug}/contacts.
		status := strings.TrimSuffix(location(r, ""), "contacts/import/") + "jobs/" + strconv.FormatInt(res.Job.ID, 10)
		w.Header().Set("Location", status)
		return writeJSON(w, http.StatusAccepted, map[string]any{"job_id": res.Job.ID, "rows": len(rows), "status": status})
	}
	res, err := ImportContacts(r.Context(), app.p.Router.Tx, rows)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

// job answers the state of one of the tenant's jobs.
func (app *App) job(_ *App, w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return tenancy.FieldErrorf(tenancy.CodeInvalid, "id", "a job id is a positive number")
	}
	if app.jobs == nil {
		return tenancy.Errorf(tenancy.CodeNotFound, "job %d not found", id)
	}
	j, err := app.jobs.Job(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"id": j.ID, "kind": j.Kind, "state": j.State, "attempt": j.Attempt, "created_at": j.CreatedAt, "finalized_at": j.FinalizedAt,
	})
}

func resourceByPath(path string) *resource {
	for _, res := range resources {
		if res.path == path {
			return res
		}
	}
	panic("crm: no resource " + path)
}
