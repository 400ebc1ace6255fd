// Package faults holds fault tests that run the tenancy binary as a separate
// process against real PostgreSQL and kill it with SIGKILL in the middle of
// its work: tenant creation, a purge, a fleet migration, a move (also to
// another server). Running the same command again must converge. The package
// has no code of its own; see kill_test.go, kill_more_test.go and
// docs/RELIABILITY.md.
package faults
