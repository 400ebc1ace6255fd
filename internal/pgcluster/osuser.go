package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// serverUser is the OS user the cluster runs as when the process is root.
const serverUser = "postgres"

// osUser is who runs initdb, pg_ctl and the server: the process itself, or
// the unprivileged serverUser when the process is root.
type osUser struct {
	name     string
	uid, gid int
	home     string
	// switched is set when commands run under another user's credentials.
	switched bool
}

// serverOSUser returns the user the cluster must run as.
func serverOSUser() (osUser, error) {
	if os.Geteuid() != 0 {
		u := osUser{uid: os.Geteuid(), gid: os.Getegid(), home: os.Getenv("HOME")}
		if cur, err := user.Current(); err == nil {
			u.name = cur.Username
		}
		return u, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return osUser{}, fmt.Errorf("PostgreSQL cannot run as root and OS user %q was not found (install Debian package postgresql, or run as an unprivileged user): %w", serverUser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return osUser{}, fmt.Errorf("OS user %q: uid %q: %w", serverUser, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return osUser{}, fmt.Errorf("OS user %q: gid %q: %w", serverUser, u.Gid, err)
	}
	return osUser{name: u.Username, uid: uid, gid: gid, home: u.HomeDir, switched: true}, nil
}

// command returns a command that runs as u, from the root directory (the
// caller's working directory may not be readable by u), with an environment
// free of PG* variables that could redirect pg_ctl or libpq.
func (u osUser) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.Env = u.env()
	if u.switched {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)},
		}
	}
	return cmd
}

func (u osUser) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		if u.switched && (strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "USER=") || strings.HasPrefix(kv, "LOGNAME=")) {
			continue
		}
		env = append(env, kv)
	}
	if u.switched {
		env = append(env, "HOME="+u.home, "USER="+u.name, "LOGNAME="+u.name)
	}
	return env
}

// chown gives path to u when commands run as another user.
func (u osUser) chown(path string) error {
	if !u.switched {
		return nil
	}
	if err := os.Chown(path, u.uid, u.gid); err != nil {
		return fmt.Errorf("give %s to OS user %s: %w", path, u.name, err)
	}
	return nil
}

// checkTraversable reports an error naming the first parent directory of dir
// that u cannot enter. Without this check initdb fails with a bare
// "Permission denied" when, say, the directory is under /root.
func (u osUser) checkTraversable(dir string) error {
	if !u.switched {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				// MkdirAll creates it as root with mode 0755: traversable.
				if p == filepath.Dir(p) {
					return nil
				}
				continue
			}
			return fmt.Errorf("check data directory parent %s: %w", p, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		var bit os.FileMode = 0o001
		switch {
		case int(st.Uid) == u.uid:
			bit = 0o100
		case int(st.Gid) == u.gid:
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("data directory %s: parent directory %s is not traversable by OS user %s, which runs PostgreSQL because it refuses to run as root (use a directory under /tmp, or chmod o+x %s)", dir, p, u.name, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// UnprivilegedCommand returns a command that runs as PostgreSQL's own
// programs do here (the postgres OS user when this process is root), after
// giving it dir. For companions that also refuse to run as root, such as
// pgbouncer.
func UnprivilegedCommand(ctx context.Context, dir, name string, args ...string) (*exec.Cmd, error) {
	u, err := serverOSUser()
	if err != nil {
		return nil, err
	}
	if err := u.chown(dir); err != nil {
		return nil, err
	}
	return u.command(ctx, name, args...), nil
}
