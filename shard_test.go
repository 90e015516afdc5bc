//go:build linux

package caddysse

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// shardEnv tells a test process that it runs one shard of the package's
// tests, started by runShards.
const shardEnv = "SSE_TEST_SHARD"

// shardPortStep moves each shard's ports (SSE_TEST_PORT_OFFSET) away from
// the others'.
const shardPortStep = 50

// runShards runs the package's tests in SSE_TEST_SHARDS processes at
// once (default 2): this one and children of its own test binary, each
// with an in-process Caddy of its own on ports of its own. The tests
// that load a config into the process's one Caddy run one at a time and
// mostly wait (on timers, timeouts, clients), so two processes take
// about half the time. Each process runs every other test, in the order
// of their names. A run of chosen tests (-test.run, -test.list,
// -test.bench, -test.fuzz) is not split.
func runShards(m *testing.M) int {
	flag.Parse()
	n, _ := strconv.Atoi(os.Getenv("SSE_TEST_SHARDS"))
	if os.Getenv("SSE_TEST_SHARDS") == "" {
		n = 2
	}
	if n < 2 || os.Getenv(shardEnv) != "" || flagsGiven("test.run", "test.list", "test.bench", "test.fuzz") {
		return m.Run()
	}
	names, err := testNames()
	if err != nil {
		fmt.Fprintf(os.Stderr, "not split: listing the tests: %v\n", err)
		return m.Run()
	}
	shards := make([][]string, n)
	for i, name := range names {
		shards[i%n] = append(shards[i%n], name)
	}
	var children []*shard
	for i := 1; i < n; i++ {
		c, err := startShard(i, shards[i])
		if err != nil {
			fmt.Fprintf(os.Stderr, "starting shard %d: %v\n", i, err)
			return 1
		}
		children = append(children, c)
	}
	_ = flag.Set("test.run", runPattern(shards[0]))
	code := m.Run()
	for _, c := range children {
		if err := c.wait(); err != nil && code == 0 {
			code = 1
		}
	}
	return code
}

// flagsGiven tells whether the command line sets any of names.
func flagsGiven(names ...string) bool {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || slices.Contains(names, f.Name) })
	return given
}

// testNames lists the package's tests, fuzz targets and examples, as
// -test.list does.
func testNames() ([]string, error) {
	out, err := exec.Command(os.Args[0], "-test.list", ".").Output()
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if name := strings.TrimSpace(line); strings.HasPrefix(name, "Test") || strings.HasPrefix(name, "Fuzz") || strings.HasPrefix(name, "Example") {
			names = append(names, name)
		}
	}
	return names, nil
}

// runPattern is the -test.run pattern of exactly names.
func runPattern(names []string) string {
	return "^(" + strings.Join(names, "|") + ")$"
}

// shard is a child test process running some of the tests.
type shard struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// startShard starts shard i: this test binary with the same flags, on
// names, with its ports moved by i steps.
func startShard(i int, names []string) (*shard, error) {
	args := append(slices.Clone(os.Args[1:]), "-test.run="+runPattern(names))
	s := &shard{cmd: exec.Command(os.Args[0], args...)}
	s.cmd.Env = append(os.Environ(), shardEnv+"="+strconv.Itoa(i),
		"SSE_TEST_PORT_OFFSET="+strconv.Itoa(caddyproc.PortOffset()+i*shardPortStep))
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // it ends with this process
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// wait waits for the shard to end, then writes what it printed.
func (s *shard) wait() error {
	err := s.cmd.Wait()
	_, _ = os.Stdout.Write(s.out.Bytes())
	return err
}
