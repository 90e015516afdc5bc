//go:build linux

package caddysse

import (
	"bytes"
	"cmp"
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
// once (default 3): this one and children of its own test binary, each
// with an in-process Caddy of its own on ports of its own. The tests
// that load a config into the process's one Caddy run one at a time and
// mostly wait (on timers, timeouts, clients), so three processes take
// about a third of the time. The tests are shared out by their usual
// times (shareOut). A run of chosen tests (-test.run, -test.list,
// -test.bench, -test.fuzz) is not split.
func runShards(m *testing.M) int {
	flag.Parse()
	n, _ := strconv.Atoi(os.Getenv("SSE_TEST_SHARDS"))
	if os.Getenv("SSE_TEST_SHARDS") == "" {
		n = 3
	}
	if n < 2 || os.Getenv(shardEnv) != "" || flagsGiven("test.run", "test.list", "test.bench", "test.fuzz") {
		return m.Run()
	}
	names, err := testNames()
	if err != nil {
		fmt.Fprintf(os.Stderr, "not split: listing the tests: %v\n", err)
		return m.Run()
	}
	shards := shareOut(names, n)
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

// shareOut shares names out among n shards of about equal time: the
// longest tests first, each to the shard with the least time so far
// (shardSeconds; any other test counts as half a second).
func shareOut(names []string, n int) [][]string {
	seconds := func(name string) float64 {
		if s, ok := shardSeconds[name]; ok {
			return s
		}
		return 0.5
	}
	byTime := slices.Clone(names)
	slices.SortStableFunc(byTime, func(a, b string) int { return cmp.Compare(seconds(b), seconds(a)) })
	shards := make([][]string, n)
	load := make([]float64, n)
	for _, name := range byTime {
		i := slices.Index(load, slices.Min(load))
		shards[i] = append(shards[i], name)
		load[i] += seconds(name)
	}
	return shards
}

// shardSeconds are the longest tests' times in seconds, in a run of the
// whole test command on this project's 2-core machine (December 2026).
// They only balance the shards: a stale figure makes a shard longer, not
// a test wrong.
var shardSeconds = map[string]float64{
	"TestProtocolsStreamSuiteH1TLSHijack": 20, "TestHijack": 15, "TestProtocolsStreamSuiteH1TLS": 17,
	"TestProtocolsStreamSuiteH3": 14, "TestSlowStreamSharesConnection": 12, "TestHijackOverTLS": 10,
	"TestProtocolsStreamSuiteH2": 11, "TestStreamIdleTimeout": 6.3, "TestHubStuckWritersDelayNoOne": 4.5,
	"TestPublishedEventsKeepNoRequestAlive": 5, "TestProtocolsStalledWriteEnds": 4.5, "TestHubSlowDropTime": 3,
	"TestStreamLongLineIsNotKept": 3.1, "TestPatternResumeWhilePublishing": 2.5,
	"TestProtocolsReloadDoesNotWaitForClientsThatNeverRead": 3.2, "TestTopicChurnGivesBackMemory": 2.3,
	"TestNoLeakWithConnectionChurn": 2.3, "TestHubFanOut": 2, "TestSlowWarningCountsEveryDrop": 2,
	"TestTokenExpiresOpenStream": 2, "TestPresenceRedisNodes": 1.6, "TestHijackFraming": 1.9,
	"TestStreamingBurstReachesAReader": 1.9,
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
