package tenanttest

import (
	"sync"
	"testing"

	"github.com/tenancyhq/tenancy"
)

// TestTrackFromParallelSubtests: parallel subtests of one bundle create
// tenants at once; the bundle's list of tenants to clean up must take them
// all (under -race, without a data race).
func TestTrackFromParallelSubtests(t *testing.T) {
	b := &Bundle{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { b.Track(&tenancy.Tenant{}) })
	}
	wg.Wait()
	if len(b.created) != 8 {
		t.Fatalf("%d tenants tracked, want 8", len(b.created))
	}
}
