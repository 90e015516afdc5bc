// Package caddyproc runs Caddy, built from this module's cmd/caddy, as a
// separate process for tests: start it on a config, reload it over its
// admin API, stop it with a signal. Every process it starts is ended when
// the test ends.
package caddyproc

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds cmd/caddy once per test process and returns its path.
// The binary is kept in the user's cache directory, one per checkout of
// the module, and shared by the test packages: go build relinks it only
// when a source has changed, so that the packages of one go test run
// link Caddy once between them (a link costs seconds of both cores).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildPath, buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// build builds cmd/caddy into the cache directory of this checkout,
// holding its lock meanwhile: other test processes wait, then find it up
// to date.
func build() (string, error) {
	dir, err := binaryDir()
	if err != nil {
		return "", err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	path := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/caddy")
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cmd/caddy: %v\n%s", err, out)
	}
	return path, nil
}

// binaryDir is the directory of this checkout's test binary:
// <user cache dir>/caddy-sse-test/<hash of the module's path>.
func binaryDir() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root, err := filepath.Abs(moduleRoot())
	if err != nil {
		return "", fmt.Errorf("locating the module: %w", err)
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, "caddy-sse-test", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating the test binary's directory: %w", err)
	}
	return dir, nil
}

// Main runs a package's tests, then calls cleanups (the tests' files
// that outlive a test): a test package that leaves such files calls it
// from its TestMain.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

// MainParallel runs the tests of a package whose tests mostly wait (on
// processes, browsers, timers): up to n of its parallel tests at once,
// rather than GOMAXPROCS, unless -test.parallel is given.
func MainParallel(m *testing.M, n int) { ssetest.MainParallel(m, n) }

// moduleRoot is the directory of this module's go.mod.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Caddy is a running Caddy process.
type Caddy struct {
	t         testing.TB
	cmd       *exec.Cmd
	AdminPort int
	Dir       string // its working, home and config directory
	log       *LockedBuffer
	exited    chan struct{}
	exitErr   error
}

// LockedBuffer collects a process's output, written and read from
// several goroutines.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs `caddy run` on a Caddyfile whose admin endpoint is
// localhost:adminPort (the Caddyfile must say so), and returns once the
// admin API answers. Extra arguments are passed to `caddy run`.
func Start(t testing.TB, caddyfile string, adminPort int, extraArgs ...string) *Caddy {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Caddy{t: t, AdminPort: adminPort, Dir: dir, log: new(LockedBuffer), exited: make(chan struct{})}
	args := append([]string{"run", "--config", cfg, "--adapter", "caddyfile"}, extraArgs...)
	c.cmd = exec.Command(bin, args...)
	c.cmd.Dir = dir
	c.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	c.cmd.Stdout = c.log
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.cleanup)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(c.AdminURL("/config/")); err == nil {
			resp.Body.Close()
			return c
		}
		select {
		case <-c.exited:
			t.Fatalf("caddy exited at start: %v\n%s", c.exitErr, c.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy's admin API did not answer\n%s", c.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup ends the process if the test did not, and shows its log when
// the test failed; the goroutines of a process still running are added to
// the log first.
func (c *Caddy) cleanup() {
	select {
	case <-c.exited:
	default:
		if c.t.Failed() {
			c.dumpGoroutines()
		}
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	if c.t.Failed() {
		lines := 80
		if os.Getenv("SSE_TEST_FULL_LOG") != "" {
			lines = 1 << 30
		}
		c.t.Logf("caddy's log:\n%s", tail(c.Log(), lines))
	}
}

// dumpGoroutines appends the process's goroutine stacks, from the admin
// API's pprof endpoint, to its log.
func (c *Caddy) dumpGoroutines() {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(c.AdminURL("/debug/pprof/goroutine?debug=2"))
	if err != nil {
		fmt.Fprintf(c.log, "goroutine dump failed: %v\n", err)
		return
	}
	defer resp.Body.Close()
	fmt.Fprintln(c.log, "goroutines of the running process:")
	_, _ = io.Copy(c.log, resp.Body)
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// Log is what the process printed so far.
func (c *Caddy) Log() string { return c.log.String() }

// PID is the process id.
func (c *Caddy) PID() int { return c.cmd.Process.Pid }

// AdminURL is the address of path on the admin API.
func (c *Caddy) AdminURL(path string) string {
	return fmt.Sprintf("http://localhost:%d%s", c.AdminPort, path)
}

// Load replaces the running config with a Caddyfile, as `caddy reload`
// does. It returns the admin API's error, if any.
func (c *Caddy) Load(caddyfile string) error {
	resp, err := c.Admin(http.MethodPost, "/load", "text/caddyfile", caddyfile)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("load: %d %s", resp.StatusCode, body)
	}
	// the connections kept alive by the previous config's servers are
	// closing: a request (a POST, which net/http does not retry) sent on
	// one of them would read EOF
	http.DefaultClient.CloseIdleConnections()
	return nil
}

// adminClient talks to the admin API on a new connection each time: a
// load that fails brings the previous config's admin endpoint back up,
// which resets the connections kept alive to the one it replaced.
var adminClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// Admin sends a request to the admin API. Caddy replaces its admin
// listener on every load, failed ones included, and a connection that
// arrives while the old listener closes is reset before it is accepted:
// such a dial is tried again, a few times, as a client would; so is a
// GET whose connection the closing listener accepted, then ended. The
// caller closes the response's body.
func (c *Caddy) Admin(method, path, contentType, body string) (*http.Response, error) {
	var last error
	for range 20 {
		req, err := http.NewRequest(method, c.AdminURL(path), strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := adminClient.Do(req)
		if err == nil || !(dialRefused(err) || method == http.MethodGet && endedUnanswered(err)) {
			return resp, err
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, last
}

// dialRefused reports whether err is a connection that was refused or
// reset before a request was sent on it.
func dialRefused(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// endedUnanswered reports whether err is a connection ended before the
// answer began: harmless to try again for a request that changes nothing.
func endedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// Signal sends sig to the process.
func (c *Caddy) Signal(sig syscall.Signal) error {
	return c.cmd.Process.Signal(sig)
}

// ErrStillRunning is returned by Wait when the process does not exit in time.
var ErrStillRunning = errors.New("caddy is still running")

// Wait waits up to timeout for the process to exit.
func (c *Caddy) Wait(timeout time.Duration) error {
	select {
	case <-c.exited:
		return nil
	case <-time.After(timeout):
		return ErrStillRunning
	}
}

// Terminate sends the process SIGTERM and waits up to timeout for it to
// exit. It returns how long the exit took, and ErrStillRunning if it did
// not exit in time.
func (c *Caddy) Terminate(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := c.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	err := c.Wait(timeout)
	return time.Since(start), err
}

// Exited is closed when the process has exited.
func (c *Caddy) Exited() <-chan struct{} { return c.exited }

// Port returns a test port: base plus SSE_TEST_PORT_OFFSET, so that two
// checkouts can run their tests at the same time. Each test package has
// its own base ports (see docs/development.md).
func Port(base int) int { return base + PortOffset() }

// PortOffset is SSE_TEST_PORT_OFFSET, 0 when unset or not a number.
func PortOffset() int {
	off, _ := strconv.Atoi(os.Getenv("SSE_TEST_PORT_OFFSET"))
	return off
}
