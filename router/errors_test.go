package router_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenancyhq/tenancy"
	"github.com/tenancyhq/tenancy/internal/tenanttest"
	"github.com/tenancyhq/tenancy/router"
)

// silentServer accepts connections and never answers, as a server that hangs
// or a network that drops packets: connecting ends at the connect timeout.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// oneTenant resolves every id to one tenant.
type oneTenant struct{ t *tenancy.Tenant }

func (r oneTenant) ResolveID(context.Context, uuid.UUID) (*tenancy.Tenant, error) { return r.t, nil }

// oneServer answers every name with one server.
type oneServer struct{ s *tenancy.Server }

func (s oneServer) Server(context.Context, string) (*tenancy.Server, error) { return s.s, nil }

// TestUnreachableServerIsUnavailable: a server that does not answer within
// the connect timeout is unavailable (503, retry later), as one that refuses
// connections is, not an internal error: the caller's own context is not
// done.
func TestUnreachableServerIsUnavailable(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	tn := &tenancy.Tenant{ID: uuid.New(), Slug: "silent", Model: tenancy.ModelShared, Status: tenancy.StatusActive,
		Placement: tenancy.Placement{Server: "silent", Database: "tenancy", Schema: "app"}}
	r, err := router.New(router.Config{
		Resolver: oneTenant{tn},
		Servers: oneServer{&tenancy.Server{Name: "silent",
			DSN: "postgres://admin@" + addr + "/tenancy?sslmode=disable&connect_timeout=1"}},
		Key: make([]byte, 32), AppRole: "app",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = selectOne(r, tn)
	tenanttest.WantCode(t, "transaction on a server that does not answer", err, tenancy.CodeUnavailable)
}

// selectOne runs one statement in a transaction of tn.
func selectOne(r *router.Router, tn *tenancy.Tenant) error {
	return r.Tx(tenanttest.Ctx(tn), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), "SELECT 1")
		return err
	})
}
