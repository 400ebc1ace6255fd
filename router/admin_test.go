package router_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

func TestAdminTx(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	server := b.ServerNames[0]
	one := b.CreateTenant(t, tenancy.ModelShared, server)
	two := b.CreateTenant(t, tenancy.ModelShared, server)
	seed(t, b, one)
	seed(t, b, two)
	var logs bytes.Buffer
	key, err := b.Platform.Catalog.TenantKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Config{Resolver: b.Platform.Cache, Servers: b.Platform.Catalog, Key: key,
		AppRole: b.AppRole, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	count := func(tx pgx.Tx) error { return nil }

	operator := tenancy.WithActor(context.Background(), tenancy.Actor{Kind: "operator", ID: "ops-1"})
	for name, c := range map[string]struct {
		ctx  context.Context
		opts *router.AdminOpts
	}{
		"NoOpts":   {operator, nil},
		"NoReason": {operator, &router.AdminOpts{Server: server}},
		"NoActor":  {context.Background(), &router.AdminOpts{Server: server, Reason: "support ticket 42"}},
	} {
		if err := r.AdminTx(c.ctx, c.opts, count); !errors.Is(err, tenancy.ErrInvalid) {
			t.Errorf("%s: got %v, want CodeInvalid", name, err)
		}
	}
	// The admin door sees every tenant's rows.
	var n int
	err = r.AdminTx(operator, &router.AdminOpts{Server: server, Reason: "support ticket 42"}, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `SELECT count(DISTINCT tenant_id) FROM shared.contacts WHERE tenant_id = ANY($1)`,
			[]any{one.ID, two.ID}).Scan(&n)
	})
	if err != nil || n != 2 {
		t.Fatalf("admin transaction saw %d tenants (%v), want 2", n, err)
	}
	if !strings.Contains(logs.String(), "operator:ops-1") || !strings.Contains(logs.String(), "support ticket 42") {
		t.Errorf("the admin transaction was not logged with its actor and reason: %s", logs.String())
	}
}
