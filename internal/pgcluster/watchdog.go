package pgcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
)

// watchdogScript waits for a line on stdin. "disarm" means the cluster was
// stopped cleanly; end of file means the process that started the cluster is
// gone, however it ended, so the script stops the server and removes the
// directories it was given. It ignores the signals a terminal or a process
// group would deliver, so that a Ctrl-C reaching the parent still gets the
// cluster stopped.
const watchdogScript = `trap '' HUP INT QUIT TERM
IFS= read -r line
[ "$line" = disarm ] && exit 0
"$1" stop -D "$2" -m fast -w -t 60 >/dev/null 2>&1
shift 2
for d in "$@"; do rm -rf -- "$d"; done
`

// watchdog is a child process that stops the cluster when this process exits.
type watchdog struct {
	w    *os.File
	wait func() error
}

// startWatchdog starts a watchdog for the cluster in dataDir, which removes
// the directories in remove after stopping it.
func startWatchdog(u osUser, pgCtl, dataDir string, remove ...string) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	args := append([]string{"-c", watchdogScript, "pgcluster-watchdog", pgCtl, dataDir}, remove...)
	// Not bound to a context: the watchdog must outlive every caller's context.
	cmd := u.command(context.Background(), "/bin/sh", args...)
	cmd.Stdin = r
	// Stdout and stderr stay /dev/null: a child holding the parent's output
	// pipes would keep "go test" waiting for them to close.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // out of reach of the terminal's Ctrl-C
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	r.Close()
	return &watchdog{w: w, wait: cmd.Wait}, nil
}

// disarm tells the watchdog that the cluster was stopped, and reaps it.
func (wd *watchdog) disarm() error {
	_, werr := io.WriteString(wd.w, "disarm\n")
	cerr := wd.w.Close()
	if err := wd.wait(); err != nil {
		return fmt.Errorf("stop watchdog: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("stop watchdog: %w", werr)
	}
	if cerr != nil {
		return fmt.Errorf("stop watchdog: %w", cerr)
	}
	return nil
}
