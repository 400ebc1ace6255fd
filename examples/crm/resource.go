package crm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/accounts"
	"github.com/tenancyhq/tenancy/router"
)

// A resource is one table of the CRM exposed as REST: list (filters and
// cursor pagination), get, create, update, delete (soft) and restore. Every
// identifier in its SQL comes from the definitions in resources.go, never
// from the request.
type resource struct {
	path     string // also the table name: "contacts"
	singular string // "contact"
	fields   []field
	// search are the text columns that ?q= matches, case-insensitively.
	search []string
}

// columns is the SELECT list: id, the fields, the timestamps.
func (res *resource) columns() string {
	cols := []string{"id"}
	for _, f := range res.fields {
		cols = append(cols, f.selectExpr())
	}
	return strings.Join(append(cols, "created_at", "updated_at", "deleted_at"), ", ")
}

func (res *resource) field(name string) *field {
	for i := range res.fields {
		if res.fields[i].name == name {
			return &res.fields[i]
		}
	}
	return nil
}

// register adds the resource's routes to mux.
func (res *resource) register(mux *http.ServeMux, app *App) {
	p := "/" + res.path
	mux.HandleFunc("GET "+p, app.handle(accounts.RoleMember, res.list))
	mux.HandleFunc("POST "+p, app.handle(accounts.RoleMember, res.create))
	mux.HandleFunc("GET "+p+"/{id}", app.handle(accounts.RoleMember, res.get))
	mux.HandleFunc("PATCH "+p+"/{id}", app.handle(accounts.RoleMember, res.update))
	mux.HandleFunc("DELETE "+p+"/{id}", app.handle(accounts.RoleMember, res.delete))
	mux.HandleFunc("POST "+p+"/{id}/restore", app.handle(accounts.RoleAdmin, res.restore))
}

// page is one page of a list.
type page struct {
	Items []map[string]any `json:"items"`
	// Next is the cursor of the next page, absent on the last one.
	Next string `json:"next_cursor,omitempty"`
}

const (
	defaultLimit = 25
	maxLimit     = 100
)

func (res *resource) list(app *App, w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	limit, after := defaultLimit, int64(0)
	var (
		where []string
		args  []any
		opts  *router.TxOpts
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	for name, vals := range q {
		v, at := vals[0], name
		if at == "" { // a problem without a field would not say where
			at = "query"
		}
		if len(vals) > 1 {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, at, "%s is given more than once", name)
		}
		switch name {
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxLimit {
				return tenancy.FieldErrorf(tenancy.CodeInvalid, "limit", "limit must be a number from 1 to %d", maxLimit)
			}
			limit = n
		case "cursor":
			id, err := decodeCursor(v)
			if err != nil {
				return err
			}
			after = id
		case "q":
			if len(res.search) == 0 {
				return tenancy.FieldErrorf(tenancy.CodeInvalid, "q", "%s cannot be searched", res.path)
			}
			if v == "" || len(v) > 200 || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return tenancy.FieldErrorf(tenancy.CodeInvalid, "q", "q must be 1 to 200 bytes of valid UTF-8 text")
			}
			pattern := arg("%" + escapeLike(v) + "%")
			var ors []string
			for _, c := range res.search {
				ors = append(ors, c+" ILIKE "+pattern)
			}
			where = append(where, "("+strings.Join(ors, " OR ")+")")
		case "deleted":
			if v != "include" && v != "only" {
				return tenancy.FieldErrorf(tenancy.CodeInvalid, "deleted", "deleted must be include or only")
			}
			opts = &router.TxOpts{IncludeDeleted: true}
			if v == "only" {
				where = append(where, "deleted_at IS NOT NULL")
			}
		default:
			f := res.field(name)
			if f == nil || !f.filter {
				return tenancy.FieldErrorf(tenancy.CodeInvalid, at, "%s cannot be filtered by %q", res.path, name)
			}
			val, err := f.parseQuery(v)
			if err != nil {
				return err
			}
			where = append(where, f.name+" = "+arg(val))
		}
	}
	where = append(where, "id > "+arg(after))
	sql := `SELECT ` + res.columns() + ` FROM ` + res.path + ` WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY id LIMIT ` + arg(limit+1)
	var items []map[string]any
	err := app.p.Router.TxWith(ctx, readOnly(opts), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		items, err = pgx.CollectRows(rows, pgx.RowToMap)
		return err
	})
	if err != nil {
		return err
	}
	out := page{Items: items}
	if out.Items == nil {
		out.Items = []map[string]any{}
	}
	if len(items) > limit {
		out.Items = items[:limit]
		out.Next = encodeCursor(items[limit-1]["id"].(int64))
	}
	return writeJSON(w, http.StatusOK, out)
}

func readOnly(opts *router.TxOpts) *router.TxOpts {
	if opts == nil {
		opts = &router.TxOpts{}
	}
	opts.ReadOnly = true
	return opts
}

// escapeLike escapes the wildcards of a LIKE pattern (the escape is '\').
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// A cursor is opaque to clients: the id of the last item seen, encoded.
func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("id:" + strconv.FormatInt(id, 10)))
}

func decodeCursor(s string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		if rest, ok := strings.CutPrefix(string(b), "id:"); ok {
			if id, err := strconv.ParseInt(rest, 10, 64); err == nil && id > 0 {
				return id, nil
			}
		}
	}
	return 0, tenancy.FieldErrorf(tenancy.CodeInvalid, "cursor", "cursor is not one this API returned")
}

// pathID parses the {id} of the path.
func (res *resource) pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, tenancy.FieldErrorf(tenancy.CodeInvalid, "id", "%s id must be a positive number", res.singular)
	}
	return id, nil
}

func (res *resource) notFound(id int64) error {
	return tenancy.Errorf(tenancy.CodeNotFound, "no %s with id %d", res.singular, id)
}

// one reads one row (visible under opts) into a map.
func (res *resource) one(ctx context.Context, tx pgx.Tx, id int64, suffix string) (map[string]any, error) {
	rows, err := tx.Query(ctx, `SELECT `+res.columns()+` FROM `+res.path+` WHERE id = $1`+suffix, id)
	if err != nil {
		return nil, err
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToMap)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, res.notFound(id)
	}
	return row, err
}

func (res *resource) get(app *App, w http.ResponseWriter, r *http.Request) error {
	id, err := res.pathID(r)
	if err != nil {
		return err
	}
	var row map[string]any
	err = app.p.Router.TxWith(r.Context(), readOnly(nil), func(tx pgx.Tx) error {
		row, err = res.one(r.Context(), tx, id, "")
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, row)
}

func (res *resource) create(app *App, w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	in, err := res.decode(r, true)
	if err != nil {
		return err
	}
	t, _ := tenancy.TenantFromContext(ctx)
	cols, vals, args := []string{"tenant_id"}, []string{"$1"}, []any{t.ID}
	for _, f := range res.fields {
		if v, ok := in[f.name]; ok {
			args = append(args, v)
			cols, vals = append(cols, f.name), append(vals, "$"+strconv.Itoa(len(args)))
		}
	}
	var row map[string]any
	err = app.p.Router.Tx(ctx, func(tx pgx.Tx) error {
		if err := res.checkRefs(ctx, tx, in); err != nil {
			return err
		}
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO `+res.path+` (`+strings.Join(cols, ", ")+`) VALUES (`+strings.Join(vals, ", ")+`) RETURNING id`,
			args...).Scan(&id); err != nil {
			return res.dbError(err)
		}
		row, err = res.one(ctx, tx, id, "")
		return err
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", location(r, strconv.FormatInt(row["id"].(int64), 10)))
	return writeJSON(w, http.StatusCreated, row)
}

func (res *resource) update(app *App, w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := res.pathID(r)
	if err != nil {
		return err
	}
	in, err := res.decode(r, false)
	if err != nil {
		return err
	}
	sets, args := []string{"updated_at = now()"}, []any{id}
	for _, f := range res.fields {
		if v, ok := in[f.name]; ok {
			args = append(args, v)
			sets = append(sets, f.name+" = $"+strconv.Itoa(len(args)))
		}
	}
	var row map[string]any
	err = app.p.Router.Tx(ctx, func(tx pgx.Tx) error {
		if err := res.checkRefs(ctx, tx, in); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE `+res.path+` SET `+strings.Join(sets, ", ")+` WHERE id = $1`, args...)
		if err != nil {
			return res.dbError(err)
		}
		if tag.RowsAffected() == 0 {
			return res.notFound(id)
		}
		row, err = res.one(ctx, tx, id, "")
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, row)
}

// delete marks the row deleted: tenancy's trigger turns the DELETE into an
// UPDATE of deleted_at, so the row can be restored.
func (res *resource) delete(app *App, w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := res.pathID(r)
	if err != nil {
		return err
	}
	err = app.p.Router.Tx(ctx, func(tx pgx.Tx) error {
		if _, err := res.one(ctx, tx, id, " FOR UPDATE"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM `+res.path+` WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (res *resource) restore(app *App, w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := res.pathID(r)
	if err != nil {
		return err
	}
	var row map[string]any
	err = app.p.Router.TxWith(ctx, &router.TxOpts{IncludeDeleted: true}, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE `+res.path+` SET deleted_at = NULL, updated_at = now() WHERE id = $1 AND deleted_at IS NOT NULL`, id)
		if err != nil {
			return res.dbError(err)
		}
		if tag.RowsAffected() == 0 {
			return tenancy.Errorf(tenancy.CodeNotFound, "no deleted %s with id %d", res.singular, id)
		}
		row, err = res.one(ctx, tx, id, "")
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, row)
}

// maxBody bounds a request body.
const maxBody = 1 << 20

// decode reads a JSON object of the resource's fields and validates each.
// On create, required fields must be present.
func (res *resource) decode(r *http.Request, create bool) (map[string]any, error) {
	var raw map[string]json.RawMessage
	if err := decodeBody(r, &raw); err != nil || raw == nil {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "the body must be one JSON object")
	}
	out := map[string]any{}
	for name, v := range raw {
		f := res.field(name)
		if f == nil {
			at := name
			if at == "" { // a problem without a field would not say where
				at = "body"
			}
			return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, at, "%s has no field %q", res.singular, name)
		}
		val, err := f.parseJSON(v)
		if err != nil {
			return nil, err
		}
		out[name] = val
	}
	for _, f := range res.fields {
		_, ok := out[f.name]
		if f.required && create && !ok {
			return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, f.name, "%s is required", f.name)
		}
	}
	if !create && len(out) == 0 {
		return nil, tenancy.FieldErrorf(tenancy.CodeInvalid, "body", "nothing to change")
	}
	return out, nil
}

// checkRefs checks that every referenced row exists and is not deleted: a
// foreign key alone would accept a deleted one.
func (res *resource) checkRefs(ctx context.Context, tx pgx.Tx, in map[string]any) error {
	for _, f := range res.fields {
		v, ok := in[f.name]
		if f.ref == "" || !ok || v == nil {
			continue
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+f.ref+` WHERE id = $1)`, v).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, f.name, "%s: no %s with id %v", f.name, strings.TrimSuffix(f.ref, "s"), v)
		}
	}
	return nil
}

// dbError names the field behind a constraint violation.
func (res *resource) dbError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	for _, f := range res.fields {
		if !strings.Contains(pgErr.ConstraintName, f.name) {
			continue
		}
		switch pgErr.Code {
		case "23505":
			return tenancy.FieldErrorf(tenancy.CodeConflict, f.name, "another %s has this %s", res.singular, f.name)
		case "23503", "23514":
			return tenancy.FieldErrorf(tenancy.CodeInvalid, f.name, "%s is not acceptable", f.name)
		}
	}
	return err
}

// location is the URL path of name under the collection the client posted to,
// as the client sent it (with its /t/{slug} prefix).
func location(r *http.Request, name string) string {
	p := r.URL.EscapedPath()
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil {
		p = u.EscapedPath()
	}
	return strings.TrimSuffix(p, "/") + "/" + url.PathEscape(name)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}
