package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrBinariesNotFound is returned by FindBinDir (and so by Start) when the
// PostgreSQL server binaries are not installed. Its message says what to
// install.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian package postgresql (apt-get install -y postgresql) or put them on PATH")

// serverBinaries are the programs a bin directory must hold. pg_ctl starts
// postgres from its own directory, so postgres must sit next to it.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// libGlob is where Debian and Ubuntu install one directory per major version.
const libGlob = "/usr/lib/postgresql/*/bin"

// FindBinDir locates the directory holding the PostgreSQL server binaries. It
// tries, in order: override when non-empty (and then nothing else), the
// directory of initdb found on PATH with symbolic links resolved, and the
// highest version among /usr/lib/postgresql/*/bin. When nothing is found the
// error is ErrBinariesNotFound, whose message says what to install.
func FindBinDir(override string) (string, error) {
	if override != "" {
		dir, err := filepath.Abs(override)
		if err != nil {
			return "", fmt.Errorf("bin dir %s: %w", override, err)
		}
		if !hasServerBinaries(dir) {
			return "", fmt.Errorf("bin dir %s: %w", override, ErrBinariesNotFound)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			if real, err = filepath.Abs(real); err == nil && hasServerBinaries(filepath.Dir(real)) {
				return filepath.Dir(real), nil
			}
		}
	}
	dirs, _ := filepath.Glob(libGlob) // the pattern is valid, so no error
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", ErrBinariesNotFound
}

func hasServerBinaries(dir string) bool {
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOf reads the major version out of /usr/lib/postgresql/<v>/bin as a
// number, so that 10 sorts above 9.6; anything unparsable sorts last.
func versionOf(binDir string) float64 {
	v, err := strconv.ParseFloat(strings.TrimSpace(filepath.Base(filepath.Dir(binDir))), 64)
	if err != nil {
		return -1
	}
	return v
}
