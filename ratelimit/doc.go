// Package ratelimit limits events per key (a tenant, or a tenant and a route
// class) with the generic cell rate algorithm (GCRA), in process or in Redis.
//
// Local keeps its state in memory: one app node's budget, and no allocation
// per decision on a key already seen. Redis keeps it in Redis, decided by a
// script on Redis's own clock in one round trip, so several app nodes share
// one budget per key. When Redis is unavailable, a Redis limiter fails open to
// a Local (the default; each node then enforces the limit on its own) or fails
// closed, logs once, counts (see Redis.Stats), and goes back to Redis by
// itself once it answers again.
//
// The HTTP middleware in httpx applies a tenant's plan with a Limiter; see
// httpx.Limit.
package ratelimit
