package connpool

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tenancyhq/tenancy/internal/pgtest"
)

// TestMain starts and stops the PostgreSQL server of TestPgxConfig. Leaks are
// checked per test (leakCheck): pgtest.Main runs the tests itself.
func TestMain(m *testing.M) { pgtest.Main(m) }

// leakCheck fails t if goroutines are left over once t and its subtests are
// done and cleaned up. Tests that call it must not run in parallel with other
// top-level tests.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}
