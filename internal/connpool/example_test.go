package connpool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tenancyhq/tenancy/internal/connpool"
)

// conn stands in for a database connection (production uses PgxConfig).
type conn struct{ db string }

func Example() {
	m, err := connpool.New(connpool.Config[*conn]{
		Budget: 2,
		Dial: func(ctx context.Context, db string) (*conn, error) {
			fmt.Println("dial", db)
			return &conn{db: db}, nil
		},
		Close: func(c *conn) { fmt.Println("close", c.db) },
	})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	ctx := context.Background()

	a, _ := m.Acquire(ctx, "tenant_a")
	a.Release()
	a, _ = m.Acquire(ctx, "tenant_a") // the idle connection, no dial
	b, _ := m.Acquire(ctx, "tenant_b")
	b.Release()
	c, _ := m.Acquire(ctx, "tenant_c") // budget full: evicts idle tenant_b, never busy tenant_a

	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = m.Acquire(short, "tenant_d") // nothing idle to evict: waits, then gives up
	fmt.Println(errors.Is(err, connpool.ErrBudgetExhausted), err)

	a.Release()
	c.Release()
	fmt.Printf("%+v\n", m.Stats())
	// Output:
	// dial tenant_a
	// dial tenant_b
	// close tenant_b
	// dial tenant_c
	// true connection budget of 2 exhausted waiting for "tenant_d": context deadline exceeded
	// {Open:2 InUse:0 Idle:2 Closing:0 Waiting:0 Keys:2 Dials:3 Evictions:1}
	// close tenant_a
	// close tenant_c
}
