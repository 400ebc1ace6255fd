// Package serve assembles the tenancy HTTP server that `tenancy serve` and
// `tenancy demo` run: the application (for example the example CRM) at "/",
// the control API at "/control/", the admin dashboard at "/admin/", health
// and readiness at "/healthz" and "/readyz", and Prometheus metrics at
// "/metrics", with a structured log line per request.
//
//	s, err := serve.New(serve.Config{Platform: p, App: app, OperatorToken: tok})
//	ln, err := net.Listen("tcp", "127.0.0.1:8080")
//	err = s.Serve(ctx, ln) // until ctx is done, then a graceful shutdown
package serve
