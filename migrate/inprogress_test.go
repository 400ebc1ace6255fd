package migrate

import (
	"context"
	"testing"

	"github.com/tenancyhq/tenancy/catalog"
	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestInProgress: InProgress sees the fleet lock while a session holds it,
// and only then.
func TestInProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.DefaultServer(t)
	cat, err := catalog.Open(ctx, s.URL(s.NewDatabase(t, "")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	m := &Migrator{cfg: Config{Catalog: cat}}
	for _, want := range []bool{false, true} {
		var unlock func()
		if want {
			if unlock, err = m.lock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got, err := InProgress(ctx, cat)
		if err != nil || got != want {
			t.Errorf("InProgress with the lock held %v: %v, %v", want, got, err)
		}
		if unlock != nil {
			unlock()
		}
	}
}
