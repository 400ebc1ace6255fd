// Package pgcluster runs a private PostgreSQL cluster from the server binaries
// installed on the machine (initdb, pg_ctl, postgres).
//
// It is the "embedded PostgreSQL" of the tenancy demo command and the engine of
// the test harness (internal/pgtest). Start creates the cluster when its data
// directory is empty or missing, starts the server on 127.0.0.1 and waits
// until it accepts connections; Stop shuts it down.
//
// PostgreSQL refuses to run as root. When the process is root, the cluster is
// created and run as the OS user "postgres": the data directory is chowned to
// it and every parent directory must be traversable by it (a directory under
// /tmp is fine, one under /root is not).
//
// A cluster in a temporary data directory never outlives the process that
// started it: a small watchdog process, holding one end of a pipe, stops the
// server and removes the directory when that pipe closes, which the kernel
// does however the process ends (return, panic, test timeout, SIGKILL).
// Config.StopWithProcess asks for the same for a kept data directory.
package pgcluster
