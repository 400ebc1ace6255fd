package ratelimit

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestLocalProperties checks GCRA's guarantees on random traffic with an
// explicit clock:
//   - conformance: in any window of length d, at most Burst + d/emission
//     decisions are allowed;
//   - a denied decision's RetryAfter is exact: the same key is allowed at
//     now+RetryAfter and not a nanosecond before (when nothing else happened);
//   - Remaining is exact: that many more are allowed at the same instant,
//     and not one more.
func TestLocalProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lim := Limit{
			Rate:  rapid.Float64Range(0.5, 5000).Draw(t, "rate"),
			Burst: rapid.IntRange(1, 40).Draw(t, "burst"),
		}
		e := int64(lim.emission())
		l := NewLocal()
		now := int64(rapid.Int64Range(0, int64(time.Hour)).Draw(t, "start"))
		var allowed []int64
		steps := rapid.IntRange(1, 300).Draw(t, "steps")
		for i := range steps {
			now += rapid.Int64Range(0, 3*e).Draw(t, "dt")
			res := l.allowAt("k", lim, now)
			if res.Allowed {
				allowed = append(allowed, now)
				// Remaining is exact at this instant.
				if i%7 == 0 {
					for j := range res.Remaining {
						if !l.allowAt("k", lim, now).Allowed {
							t.Fatalf("remaining %d, but call %d at the same instant was denied", res.Remaining, j)
						}
						allowed = append(allowed, now)
					}
					if l.allowAt("k", lim, now).Allowed {
						t.Fatalf("remaining %d, but one more was allowed", res.Remaining)
					}
				}
				continue
			}
			if res.RetryAfter <= 0 {
				t.Fatalf("denied with retry after %v", res.RetryAfter)
			}
			if l.allowAt("k", lim, now+int64(res.RetryAfter)-1).Allowed {
				t.Fatalf("allowed 1ns before its retry-after %v", res.RetryAfter)
			}
			now += int64(res.RetryAfter)
			if !l.allowAt("k", lim, now).Allowed {
				t.Fatalf("denied at its retry-after %v", res.RetryAfter)
			}
			allowed = append(allowed, now)
		}
		// Conformance over every window that starts and ends at an allowed decision.
		for i := range allowed {
			for j := i; j < len(allowed); j++ {
				n := int64(j - i + 1)
				if max := int64(lim.Burst) + (allowed[j]-allowed[i])/e; n > max {
					t.Fatalf("%d allowed in %v, at most %d conform to %+v", n, time.Duration(allowed[j]-allowed[i]), max, lim)
				}
			}
		}
	})
}
