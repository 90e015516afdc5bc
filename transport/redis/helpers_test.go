package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// sharedRedis is the Redis server the tests use under a key prefix of
// their own ($SSE_REDIS_ADDR, default 127.0.0.1:6379); fault tests start
// private servers instead.
var sharedRedis = ssetest.RedisAddr()

// uniquePrefix returns a key prefix no other test uses, and deletes its
// keys when the test ends.
func uniquePrefix(t testing.TB, addr string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "sse-test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() { deleteKeys(t, addr, prefix) })
	return prefix
}

// deleteKeys deletes the keys of prefix.
func deleteKeys(t testing.TB, addr, prefix string) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, "{"+prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for chunk := range slices.Chunk(keys, 500) {
		c.Del(ctx, chunk...)
	}
}

// sink records what a transport hands the hub.
type sink struct {
	mu         sync.Mutex
	events     []*transport.Event
	interrupts []interruption
	disconns   []transport.Disconnect
	changed    chan struct{} // closed and replaced at every call
	subs       int           // what Deliver answers
}

type interruption struct {
	topics []string
	reason string
}

func newSink() *sink {
	return &sink{changed: make(chan struct{}), subs: 1}
}

func (s *sink) Deliver(ev *transport.Event) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
	close(s.changed)
	s.changed = make(chan struct{})
	return s.subs
}

func (s *sink) Interrupt(topics []string, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.interrupts = append(s.interrupts, interruption{slices.Clone(topics), reason})
	close(s.changed)
	s.changed = make(chan struct{})
}

// Evicted implements transport.Sink; the Redis transport keeps its
// history in Redis and never calls it.
func (s *sink) Evicted(*transport.Event) {}

// Disconnect implements transport.Sink; it records the request and
// ends no stream.
func (s *sink) Disconnect(d transport.Disconnect) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disconns = append(s.disconns, d)
	close(s.changed)
	s.changed = make(chan struct{})
	return 0
}

// await waits until cond holds on the sink's records.
func (s *sink) await(t testing.TB, what string, cond func(events []*transport.Event, ints []interruption) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ok := cond(s.events, s.interrupts)
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("timed out waiting for %s: %d events, interrupts %v", what, len(s.events), s.interrupts)
		}
	}
}

// seqs returns the seqs of the events delivered so far.
func (s *sink) seqs() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, len(s.events))
	for i, ev := range s.events {
		out[i] = ev.Seq
	}
	return out
}

// node is one transport opened on a hub, as one Caddy instance has it.
type node struct {
	*Transport
	sink *sink
}

// openNode opens a transport on hub of prefix at addr.
func openNode(t testing.TB, addr, prefix, hub string, limits transport.Limits, opts ...func(*Transport)) *node {
	t.Helper()
	return openNodeUp(t, true, addr, prefix, hub, limits, opts...)
}

// openDownNode is openNode for a node whose Redis is down: it does not
// wait for the node to serve.
func openDownNode(t testing.TB, addr, prefix, hub string, limits transport.Limits, opts ...func(*Transport)) *node {
	t.Helper()
	return openNodeUp(t, false, addr, prefix, hub, limits, opts...)
}

// openNodeUp opens a node, and waits for it to serve if await.
func openNodeUp(t testing.TB, await bool, addr, prefix, hub string, limits transport.Limits, opts ...func(*Transport)) *node {
	t.Helper()
	tr := &Transport{Addresses: []string{addr}, Prefix: prefix, Timeout: 0}
	for _, o := range opts {
		o(tr)
	}
	s := newSink()
	startTransport(t, tr, hub, limits, s, await)
	return &node{Transport: tr, sink: s}
}

// startTransport opens tr on hub with sink s, to be closed when the test
// ends, and waits for it to serve if await: Open waits for the Pub/Sub
// connection only a little (the timeout: 300 ms in the fault tests); on
// a busy machine the tests wait longer, up to 10 s.
func startTransport(t testing.TB, tr *Transport, hub string, limits transport.Limits, s transport.Sink, await bool) {
	t.Helper()
	if err := tr.Open(hub, limits, s); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	if !await {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tr.rd.awaitUp(ctx)
	cancel()
}

// defaultLimits are the hub defaults.
var defaultLimits = transport.Limits{Events: 1000, MaxBytes: 64 << 20}

// publish publishes one message and returns its receipt.
func (n *node) publish(t testing.TB, data string, topics ...string) transport.Receipt {
	t.Helper()
	rs, err := n.Publish(context.Background(), transport.PublishRequest{
		Messages: []transport.Message{{Topics: topics, Data: data, Retry: -1}},
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return rs[0]
}

// watch watches topics, failing the test on error.
func (n *node) watch(t testing.TB, topics ...string) {
	t.Helper()
	if err := n.Watch(context.Background(), topics); err != nil {
		t.Fatalf("watch %v: %v", topics, err)
	}
}

// replay runs a replay, failing the test on error.
func (n *node) replay(t testing.TB, q transport.ReplayQuery) transport.Replay {
	t.Helper()
	r, err := n.Replay(context.Background(), q)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	return r
}

func seqOf(t testing.TB, id string) uint64 {
	t.Helper()
	_, seq, ok := transport.ParseID(id)
	if !ok {
		t.Fatalf("bad id %q", id)
	}
	return seq
}

func eventSeqs(evs []*transport.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

// privateRedis is a redis-server a fault test starts, stops and kills.
type privateRedis struct {
	t    testing.TB
	Addr string
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

// startPrivateRedis starts redis-server on a free port, without
// persistence unless args say otherwise.
func startPrivateRedis(t testing.TB, args ...string) *privateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SSE_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server is not installed")
		}
		t.Skip("redis-server is not installed")
	}
	port := freePort(t)
	if slices.Contains(args, "--cluster-enabled") {
		// the cluster bus port, by default port+10000, which may be taken
		args = append(args, "--cluster-port", strconv.Itoa(freePort(t)))
	}
	r := &privateRedis{t: t, port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), dir: t.TempDir(), args: args}
	t.Cleanup(func() { r.kill() })
	for try := 0; !r.run(); try++ {
		// another test's server took the port between freePort and the
		// start (the tests run in parallel): another port
		if try == 3 {
			t.Fatalf("redis-server found its port taken %d times", try+1)
		}
		r.port = freePort(t)
		r.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	}
	return r
}

// freePort returns a TCP port that was free on loopback a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs the server again on its port (a restart) and waits until
// it answers.
func (r *privateRedis) start() {
	r.t.Helper()
	if !r.run() {
		r.t.Fatalf("another process took port %d while redis-server was down", r.port)
	}
}

// run runs the server and waits until it answers. It reports false,
// with the server stopped, when another process answers on its port.
func (r *privateRedis) run() bool {
	r.t.Helper()
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", filepath.Join(r.dir, "log")}, r.args...)
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	answers := func() bool {
		err := c.Ping(context.Background()).Err()
		return err == nil || strings.Contains(err.Error(), "NOAUTH")
	}
	for !answers() {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "log"))
			r.t.Fatalf("redis-server did not answer on %s\n%s", r.Addr, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid := serverPID(c); pid != 0 && pid != r.cmd.Process.Pid {
		r.kill()
		return false
	}
	return true
}

// serverPID is the process id the server at c reports; 0 when it does
// not say (it wants a password).
func serverPID(c *goredis.Client) int {
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		return 0
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	return 0
}

// kill ends the server with SIGKILL and waits for it.
func (r *privateRedis) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// client returns a client of the server, closed with the test.
func (r *privateRedis) client() *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: r.Addr, MaxRetries: -1})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond until it holds, for what cannot be awaited
// otherwise (state in another process).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 10*time.Second, what, cond)
}

// eventuallyWithin is eventually with a safety net of limit.
func eventuallyWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
