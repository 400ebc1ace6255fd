// Package redistest gives tests a real Redis server.
//
// By default it starts a private redis-server from the binary installed on the
// machine, on a free loopback port (never the shared 6379), with persistence
// off, and stops it when the tests end. A missing binary fails the test with a
// message that says what to install; tests are never skipped for it.
//
// Environment:
//
//   - TENANCY_TEST_REDIS_URL: a redis:// URL that Default returns instead of
//     starting a server. Tests must use keys of their own (see Prefix), since
//     other test binaries may share it. Tests that stop and restart Redis
//     always start a private server (Start).
//
// A test package calls Main from TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
package redistest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvURL points Default at an existing Redis.
const EnvURL = "TENANCY_TEST_REDIS_URL"

// startTimeout bounds the start of a private server.
const startTimeout = 30 * time.Second

// Server is a Redis server for tests.
type Server struct {
	url  string
	addr string // host:port of a private server

	dir string // working directory of a private server

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil when stopped or not private
	done chan struct{} // closed when cmd has exited
}

// URL returns the server's redis:// URL.
func (s *Server) URL() string { return s.url }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

var state struct {
	mu      sync.Mutex
	def     *Server
	defErr  error
	defOnce sync.Once
	started []*Server
}

// Main runs the tests, then stops every server this process started, and exits
// with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	state.mu.Lock()
	started := state.started
	state.started = nil
	state.mu.Unlock()
	for _, s := range started {
		s.stop()
		_ = os.RemoveAll(s.dir)
	}
	os.Exit(code)
}

// Default returns the package's shared server: TENANCY_TEST_REDIS_URL when
// set, else a private server started once per test binary.
func Default(tb testing.TB) *Server {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{url: u}
	}
	state.defOnce.Do(func() { state.def, state.defErr = start() })
	if state.defErr != nil {
		tb.Fatalf("redistest: %v", state.defErr)
	}
	return state.def
}

// Start starts a private server for one test, which may Stop and Restart it.
// It is stopped when the test ends; packages that use only Start need not
// call Main.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(func() {
		s.stop()
		_ = os.RemoveAll(s.dir)
	})
	return s
}

// Prefix returns a key prefix unique to this call, for tests that share a
// server.
func Prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test:" + hex.EncodeToString(b) + ":"
}

func start() (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server is not installed: run scripts/setup (Debian: apt-get install redis-server), or set " + EnvURL)
	}
	dir, err := os.MkdirTemp("", "tenancy-redis-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{url: "redis://" + addr + "/0", addr: addr, dir: dir}
	if err := s.launch(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	state.mu.Lock()
	state.started = append(state.started, s)
	state.mu.Unlock()
	return s, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts redis-server on s.addr and waits until it answers PING.
func (s *Server) launch() error {
	_, port, _ := net.SplitHostPort(s.addr)
	cmd := exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", port, "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "yes",
		"--loglevel", "warning", "--logfile", "")
	cmd.Stdout, cmd.Stderr = nil, nil
	// The server dies with the test binary, even if the binary is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(startTimeout)
	for ping(s.addr) != nil {
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited at start: %v", s.addr, waitErr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on %s did not answer within %v", s.addr, startTimeout)
		}
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// ping sends PING to addr and checks for PONG.
func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Stop kills the server (as a crash would: nothing is saved). Only for
// servers from Start.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if s.addr == "" {
		tb.Fatal("redistest: Stop on a server this process did not start")
	}
	s.stop()
}

func (s *Server) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts a stopped server again on the same port, empty.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.addr == "" {
		tb.Fatal("redistest: Restart on a server this process did not start")
	}
	s.stop()
	if err := s.launch(); err != nil {
		tb.Fatalf("redistest: restart: %v", err)
	}
}
