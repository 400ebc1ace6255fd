package crm

import (
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/audit"
	"github.com/tenancyhq/tenancy/router"
)

// auditLog answers the tenant's audit log, read in the tenant's own
// transaction: ?table= ?actor= ?after= ?limit=.
func (app *App) auditLog(_ *App, w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, _ := tenancy.TenantFromContext(ctx)
	q := r.URL.Query()
	opts := audit.ListOpts{Table: q.Get("table"), Actor: q.Get("actor")}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, "after", "after must be a sequence number")
		}
		opts.After = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return tenancy.FieldErrorf(tenancy.CodeInvalid, "limit", "limit must be a number from 1 to 1000")
		}
		opts.Limit = n
	}
	var entries []audit.Entry
	var next int64
	err := app.p.Router.TxWith(ctx, &router.TxOpts{ReadOnly: true}, func(tx pgx.Tx) (err error) {
		entries, next, err = audit.List(ctx, tx, t.Placement.Schema, t.ID, &opts)
		return err
	})
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []audit.Entry{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Items []audit.Entry `json:"items"`
		Next  int64         `json:"next,omitempty"`
	}{entries, next})
}
