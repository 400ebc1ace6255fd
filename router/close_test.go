package router_test

import (
	"context"
	"testing"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

// closingServers looks servers up in the catalog, closing the router first:
// a router closed while a transaction looks up its tenant's server.
type closingServers struct {
	router.Servers
	r **router.Router
}

func (s closingServers) Server(ctx context.Context, name string) (*tenancy.Server, error) {
	(*s.r).Close()
	return s.Servers.Server(ctx, name)
}

// TestCloseDuringFirstTransaction: a transaction that reaches a server for
// the first time while the router closes must not open a connection pool that
// nobody closes (its connections and idle reaper would outlive the router).
func TestCloseDuringFirstTransaction(t *testing.T) {
	t.Parallel()
	b := tenanttest.Setup(t, nil)
	server := b.ServerNames[0]
	tn := b.CreateTenant(t, tenancy.ModelShared, server)
	key, err := b.Platform.Catalog.TenantKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var r *router.Router
	r, err = router.New(router.Config{Resolver: b.Platform.Cache, Servers: closingServers{b.Platform.Catalog, &r},
		Key: key, AppRole: b.AppRole})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := selectOne(r, tn); err == nil {
		t.Error("a transaction ran on a closed router")
	}
	if s := r.Stats(server); s.Open != 0 {
		t.Fatalf("after Close, the router keeps %d connections open (%+v)", s.Open, s)
	}
}
