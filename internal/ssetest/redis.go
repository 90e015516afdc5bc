package ssetest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RequireRedis skips the test when no Redis answers at addr, or fails it
// with SSE_REQUIRE_REDIS set (CI).
func RequireRedis(t testing.TB, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if os.Getenv("SSE_REQUIRE_REDIS") != "" {
			t.Fatalf("no redis at %s: %v", addr, err)
		}
		t.Skipf("no redis at %s: %v", addr, err)
	}
	c.Close()
}

// PrivateRedis starts a redis-server of the test's own on a free loopback
// port, without snapshots, with args added to its command line (e.g. an
// append-only file, so that a restart keeps its data), and returns its
// address, a function that kills it (SIGKILL, by its PID) and one that
// starts it again after a kill. It is killed when the test ends. Without
// redis-server the test is skipped, or fails with SSE_REQUIRE_REDIS set.
func PrivateRedis(t testing.TB, args ...string) (addr string, kill, start func()) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SSE_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server is not installed")
		}
		t.Skip("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	var cmd *exec.Cmd
	kill = func() {
		if cmd != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			cmd = nil
		}
	}
	start = func() {
		cmd = exec.Command("redis-server", append([]string{"--port", port, "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--logfile", filepath.Join(dir, "log")}, args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis-server did not answer on %s", addr)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	start()
	t.Cleanup(kill)
	return addr, kill, start
}
