// Package pgtest gives tests real PostgreSQL servers and fresh databases on
// them.
//
// By default each test binary starts its own private cluster (see
// internal/pgcluster) from the PostgreSQL server binaries installed on the
// machine, with durability turned off for speed; the shared PostgreSQL
// service on 127.0.0.1:5432 is never used unless asked for. Missing binaries
// fail the test run with a message that says what to install; tests are
// never skipped for it.
//
// Environment:
//
//   - TENANCY_TEST_DATABASE_URL: a superuser postgres:// URL. DefaultServer
//     returns it instead of starting a cluster, and the harness creates (and
//     drops) its databases there. Names carry the process id or a random
//     part, so test binaries can run in parallel against one server.
//   - TENANCY_TEST_DATABASE_URLS: space-separated superuser URLs of distinct
//     servers, for Servers. Without it, Servers returns the one
//     TENANCY_TEST_DATABASE_URL server n times (under n names) when that is
//     set, and private clusters otherwise.
//
// A test package calls Main from TestMain, then asks for databases:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		srv := pgtest.DefaultServer(t)
//		tmpl := srv.Template(t, "schema", func(ctx context.Context, url string) error {
//			return migrate(ctx, url) // runs once per test binary
//		})
//		db := srv.NewDatabase(t, tmpl) // a fresh copy, dropped after the test
//		conn, err := pgx.Connect(ctx, srv.URL(db))
//		…
//	}
//
// Main stops the private clusters when the tests end and drops the template
// databases it built on a shared server. Even without Main, or when the test
// binary panics, times out or is killed, a private cluster does not outlive
// its test binary: pgcluster's watchdog process stops it and removes its
// directory once the binary has exited.
package pgtest
