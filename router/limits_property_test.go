package router

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"
)

// TestTxSlotsProperties runs random arrivals and hold times against the cap on
// a fake clock, and checks:
//   - no more than the cap hold a slot at once;
//   - FIFO: a caller that waited is granted after every caller that arrived
//     before it and was granted;
//   - bounded: a caller is refused only after waiting the whole wait, or at
//     once when the queue is full, and never while a slot is free for it;
//   - nothing is left behind when all have finished.
func TestTxSlotsProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		limit := rapid.IntRange(1, 4).Draw(rt, "limit")
		queue := rapid.IntRange(1, 6).Draw(rt, "queue")
		wait := time.Duration(rapid.IntRange(1, 50).Draw(rt, "wait_ms")) * time.Millisecond
		n := rapid.IntRange(1, 30).Draw(rt, "callers")
		arrive := make([]time.Duration, n)
		hold := make([]time.Duration, n)
		for i := range n {
			arrive[i] = time.Duration(rapid.IntRange(0, 5).Draw(rt, "gap_ms")) * time.Millisecond
			hold[i] = time.Duration(rapid.IntRange(0, 40).Draw(rt, "hold_ms")) * time.Millisecond
		}
		var failure string
		synctest.Test(t, func(t *testing.T) {
			var ts txSlots
			id := uuid.New()
			var mu sync.Mutex
			holders, most := 0, 0
			grantedAt := make([]time.Time, n) // zero: refused
			waitedFor := make([]time.Duration, n)
			refused := make([]bool, n)
			var wg sync.WaitGroup
			for i := range n {
				time.Sleep(arrive[i])
				// The order of arrival is the order of these calls: each
				// goroutine reaches acquire before the next one starts.
				started := make(chan struct{})
				wg.Go(func() {
					start := time.Now()
					close(started)
					err := ts.acquire(context.Background(), id, limit, wait, queue)
					waitedFor[i] = time.Since(start)
					if err != nil {
						refused[i] = true
						if err == errWaited && waitedFor[i] != wait {
							mu.Lock()
							failure = "refused after " + waitedFor[i].String() + ", want the whole wait"
							mu.Unlock()
						}
						if err == errQueueFull && waitedFor[i] != 0 {
							mu.Lock()
							failure = "a full queue made a caller wait"
							mu.Unlock()
						}
						return
					}
					mu.Lock()
					holders++
					most = max(most, holders)
					grantedAt[i] = time.Now()
					mu.Unlock()
					time.Sleep(hold[i])
					mu.Lock()
					holders--
					mu.Unlock()
					ts.release(id)
				})
				<-started
				synctest.Wait() // it has acquired, queued or been refused
			}
			wg.Wait()
			if most > limit {
				failure = "more holders than the cap"
			}
			// FIFO: no caller is granted before one that arrived earlier.
			// Callers granted at the same instant (one release, several
			// slots) are not ordered: their goroutines run in any order.
			for i := range n {
				for j := i + 1; j < n; j++ {
					if !grantedAt[i].IsZero() && !grantedAt[j].IsZero() && grantedAt[j].Before(grantedAt[i]) {
						failure = "a later arrival was granted before an earlier one"
					}
				}
			}
			if in, w := ts.running(id); in != 0 || w != 0 || len(ts.tenants) != 0 {
				failure = "slots left behind"
			}
			// A refusal means the cap was full: with a cap over the number of
			// callers nobody is ever refused.
			if limit >= n {
				for i := range n {
					if refused[i] || waitedFor[i] != 0 {
						failure = "a caller waited or was refused under a cap above the demand"
					}
				}
			}
		})
		if failure != "" {
			rt.Fatal(failure)
		}
	})
}
