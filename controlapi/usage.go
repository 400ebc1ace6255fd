package controlapi

import (
	"context"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/router"
)

// Usage is what a tenant stores.
type Usage struct {
	// Rows counts the tenant's rows in its tenant tables, deleted ones and
	// the audit log and its chain head included.
	Rows int64 `json:"rows"`
	// Bytes is the size of the tenant's tables and indexes in its own schema
	// or database; in the shared model, the size of its rows (an estimate
	// without indexes).
	Bytes int64 `json:"bytes"`
	// Requests and RateLimited count the tenant's HTTP requests, and those
	// answered 429, on this app node since it started (see Config.Requests);
	// absent when the API has no counter.
	Requests    *int64 `json:"requests,omitempty"`
	RateLimited *int64 `json:"rate_limited,omitempty"`
}

// UsagePoint is one minute of a tenant's requests on this app node.
type UsagePoint struct {
	At          time.Time `json:"at"` // the minute's start
	Requests    int64     `json:"requests"`
	RateLimited int64     `json:"rate_limited"`
}

// UsageSeries is a tenant's requests per minute on this app node.
type UsageSeries struct {
	IntervalSeconds int          `json:"interval_seconds"`
	Points          []UsagePoint `json:"points"` // oldest first
}

func (a *API) tenantUsageSeries(w http.ResponseWriter, r *http.Request) (int, any, error) {
	t, err := a.tenant(r)
	if err != nil {
		return 0, nil, err
	}
	if a.cfg.RequestSeries == nil {
		return 0, nil, tenancy.Errorf(tenancy.CodeNotFound, "this server does not count requests per tenant")
	}
	return http.StatusOK, &UsageSeries{IntervalSeconds: 60, Points: a.cfg.RequestSeries(t.Slug)}, nil
}

func (a *API) tenantUsage(w http.ResponseWriter, r *http.Request) (int, any, error) {
	t, err := a.tenant(r)
	if err != nil {
		return 0, nil, err
	}
	u, err := a.usage(r.Context(), t)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, u, nil
}

// usage measures a tenant through the router's admin door.
func (a *API) usage(ctx context.Context, t *tenancy.Tenant) (*Usage, error) {
	u := &Usage{}
	err := a.cfg.Platform.Router.AdminTx(ctx, &router.AdminOpts{
		Server: t.Placement.Server, Database: t.Placement.Database, Reason: "control api: measure the usage of " + t.Slug,
	}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
			WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`, t.Placement.Schema)
		if err != nil {
			return err
		}
		type table struct {
			name string
			size int64
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
			var tb table
			return tb, r.Scan(&tb.name, &tb.size)
		})
		if err != nil {
			return err
		}
		for _, tb := range tables {
			// tb.name is quoted by format('%I.%I') from the catalog's own names.
			var n, bytes int64
			if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(pg_column_size(x.*)), 0) FROM `+tb.name+` x WHERE tenant_id = $1`, t.ID).
				Scan(&n, &bytes); err != nil {
				return err
			}
			u.Rows += n
			if t.Model == tenancy.ModelShared {
				u.Bytes += bytes
			} else {
				u.Bytes += tb.size
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if a.cfg.Requests != nil {
		n, limited := a.cfg.Requests(t.Slug)
		u.Requests, u.RateLimited = &n, &limited
	}
	return u, nil
}
