package connpool

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by Acquire once the Manager is closed.
var ErrClosed = errors.New("connection manager closed")

// ErrBudgetExhausted matches, with errors.Is, every *BudgetError.
var ErrBudgetExhausted = errors.New("connection budget exhausted")

// BudgetError is returned by Acquire when the caller's context ended while it
// waited for a connection. It wraps the context's error, so
// errors.Is(err, context.DeadlineExceeded) holds after a timeout, and it
// matches ErrBudgetExhausted.
type BudgetError struct {
	// Key is the key the caller waited for.
	Key string
	// Limit is the limit that was reached: the Budget, or MaxPerKey when
	// PerKey is set.
	Limit int
	// PerKey reports that the key's own limit (MaxPerKey) was reached, not
	// the budget of the whole Manager.
	PerKey bool
	// Err is the context's error.
	Err error
}

// Error says which limit was reached and why the caller stopped waiting.
func (e *BudgetError) Error() string {
	if e.PerKey {
		return fmt.Sprintf("connection limit of %d per key reached for %q: %v", e.Limit, e.Key, e.Err)
	}
	return fmt.Sprintf("connection budget of %d exhausted waiting for %q: %v", e.Limit, e.Key, e.Err)
}

// Unwrap returns the context's error.
func (e *BudgetError) Unwrap() error { return e.Err }

// Is reports whether target is ErrBudgetExhausted.
func (e *BudgetError) Is(target error) bool { return target == ErrBudgetExhausted }
