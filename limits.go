package tenancy

import (
	"fmt"
	"time"
)

// Limits are what one tenant may use: its tier's plan in the catalog, with the
// tenant's own overrides applied. The zero value of a field means "no limit".
type Limits struct {
	// RPS is the sustained rate of requests per second the HTTP layer allows.
	RPS float64 `json:"rps"`
	// Burst is how many requests may arrive at once above that rate (at least 1
	// when RPS is set).
	Burst int `json:"burst"`
	// MaxConcurrentTx caps the tenant's transactions running at once on one app
	// node (one router); more wait briefly, then fail with CodeRateLimited.
	MaxConcurrentTx int `json:"max_concurrent_tx"`
	// StatementTimeout is set transaction-locally on every tenant transaction
	// (PostgreSQL's statement_timeout). Zero leaves the server's default.
	StatementTimeout time.Duration `json:"statement_timeout"`
	// DBTime is the tenant's budget of database time on one app node: the
	// seconds its transactions may hold a connection per second, on average
	// (0.25: a quarter of one connection). A tenant that has spent more
	// than it has earned is refused with CodeRateLimited until it has paid
	// the debt back: its heavy queries cost it, not the others.
	DBTime float64 `json:"db_time"`
}

// maxRate bounds RPS and Burst: ratelimit.Limit refuses more, and a plan it
// refused would fail every request of its tenants.
const maxRate = 1e6

// maxDBTime bounds DBTime, in seconds per second.
const maxDBTime = 1000

// Validate returns an error with code CodeInvalid when a field is negative, a
// rate or a burst is above 1e6 (the most the rate limiters of package
// ratelimit enforce), a burst is given without a rate (or a rate without a
// burst), or the statement timeout is not a whole number of milliseconds
// below 24 hours, or the database time budget is above 1,000 seconds per
// second.
func (l Limits) Validate() error {
	switch {
	case !(l.RPS >= 0 && l.RPS <= maxRate): // NaN too
		return Errorf(CodeInvalid, "limits: rps must be positive and at most %g, got %v", maxRate, l.RPS)
	case l.Burst < 0 || l.Burst > maxRate:
		return Errorf(CodeInvalid, "limits: burst must be positive and at most %g, got %d", maxRate, l.Burst)
	case (l.RPS > 0) != (l.Burst > 0):
		return Errorf(CodeInvalid, "limits: rps and burst go together (rps %v, burst %d)", l.RPS, l.Burst)
	case l.MaxConcurrentTx < 0:
		return Errorf(CodeInvalid, "limits: max concurrent transactions must be positive, got %d", l.MaxConcurrentTx)
	case l.StatementTimeout < 0 || l.StatementTimeout >= 24*time.Hour || l.StatementTimeout%time.Millisecond != 0:
		return Errorf(CodeInvalid, "limits: statement timeout must be whole milliseconds below 24h, got %v", l.StatementTimeout)
	case !(l.DBTime >= 0 && l.DBTime <= maxDBTime): // NaN too
		return Errorf(CodeInvalid, "limits: db_time must be positive and at most %g seconds per second, got %v", float64(maxDBTime), l.DBTime)
	}
	return nil
}

// String formats the limits for logs.
func (l Limits) String() string {
	return fmt.Sprintf("rps=%g burst=%d max_tx=%d statement_timeout=%v db_time=%g", l.RPS, l.Burst, l.MaxConcurrentTx, l.StatementTimeout, l.DBTime)
}
