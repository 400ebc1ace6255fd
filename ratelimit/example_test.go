package ratelimit_test

import (
	"context"
	"fmt"

	"github.com/tenancyhq/tenancy/ratelimit"
)

// A tenant's plan allows 2 requests per second with a burst of 3: the first
// three at once are allowed, the fourth must wait half a second.
func ExampleLocal() {
	ctx := context.Background()
	limiter := ratelimit.NewLocal() // or ratelimit.NewRedis, to share the budget across app nodes
	limit := ratelimit.PerSecond(2, 3)
	for range 4 {
		res, err := limiter.Allow(ctx, "tenant:acme", limit)
		if err != nil {
			panic(err)
		}
		if res.Allowed {
			fmt.Println("allowed,", res.Remaining, "remaining")
		} else {
			fmt.Printf("denied, retry after %.1fs\n", res.RetryAfter.Seconds())
		}
	}
	// Output:
	// allowed, 2 remaining
	// allowed, 1 remaining
	// allowed, 0 remaining
	// denied, retry after 0.5s
}
