//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// Test ports of this package, before SSE_TEST_PORT_OFFSET: the Caddy of
// TestSmoke has its admin API on 2700 and its site on 8700; 8709 is its
// https_port, never bound. TestSmokeProtocols has 2701, 8701 and 8702
// (proto_test.go); internal/benchfloor's tests have 2703, 8703 and 8704;
// 2702, 2704-2709 and 8705-8708 are free for more.
const (
	smokeAdminBase = 2700
	smokeHTTPBase  = 8700
	smokeHTTPSBase = 8709
)

// runTool runs ssebench with args and decodes its JSON summary.
func runTool(t *testing.T, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, append(args, "--quiet"), &stdout, &stderr); err != nil {
		t.Fatalf("ssebench %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("ssebench %s printed %d lines, want one:\n%s", args[0], len(lines), stdout.String())
	}
	var summary map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &summary); err != nil {
		t.Fatalf("the summary is not JSON: %v\n%s", err, lines[0])
	}
	return summary
}

// num reads a number from a summary by its dotted path.
func num(t *testing.T, m map[string]any, path string) float64 {
	t.Helper()
	var v any = m
	for _, key := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: %v is not an object", path, v)
		}
		if v, ok = obj[key]; !ok {
			t.Fatalf("the summary has no %s: %v", path, m)
		}
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%s = %v, not a number", path, v)
	}
	return f
}

// expectEqual checks summary fields against values.
func expectEqual(t *testing.T, m map[string]any, want map[string]float64) {
	t.Helper()
	for path, w := range want {
		if got := num(t, m, path); got != w {
			t.Errorf("%s = %v, want %v", path, got, w)
		}
	}
}

// checkClean checks a fanout run: everything acknowledged arrived once.
func checkClean(t *testing.T, m map[string]any) {
	t.Helper()
	expected := num(t, m, "expected")
	if expected == 0 {
		t.Fatalf("nothing was expected: %v", m)
	}
	expectEqual(t, m, map[string]float64{"received": expected, "distinct": expected, "lost": 0,
		"duplicated": 0, "unexpected": 0, "disconnected": 0, "publish_errors": 0})
	for _, p := range []string{"latency_ms.p50", "latency_ms.p99", "latency_ms.max", "read_latency_ms.max",
		"publish_latency_ms.p99", "deliveries_per_s"} {
		if num(t, m, p) <= 0 {
			t.Errorf("%s is not positive", p)
		}
	}
	// arrival comes before the read (the figures are rounded to 1 µs)
	if arrival, read := num(t, m, "latency_ms.mean"), num(t, m, "read_latency_ms.mean"); arrival > read+0.001 {
		t.Errorf("mean latency to arrival %v ms, after the read at %v ms", arrival, read)
	}
}

// checkBurst checks a burst: each of subs subscribers got the perSub
// events of its topic, once, on its first connection.
func checkBurst(t *testing.T, m map[string]any, subs, perSub float64) {
	t.Helper()
	expectEqual(t, m, map[string]float64{"connected": subs, "subscribed": subs, "complete": subs,
		"expected": subs * perSub, "received": subs * perSub, "distinct": subs * perSub, "lost": 0, "duplicated": 0,
		"unexpected": 0, "disconnected": 0, "publish_errors": 0, "disconnected_received.total": 0,
		"received_per_sub.min": perSub, "received_per_sub.median": perSub, "received_per_sub.max": perSub})
	if m["ok"] != true || m["timed_out"] != false {
		t.Errorf("ok = %v (%v), timed_out = %v", m["ok"], m["why"], m["timed_out"])
	}
	for _, p := range []string{"publish_ms", "deliver_ms", "latency_ms.p50", "latency_ms.p99", "latency_ms.max",
		"publish_latency_ms.max", "deliveries_per_s", "stream_bytes", "stream_mib_per_s"} {
		if num(t, m, p) <= 0 {
			t.Errorf("%s is not positive", p)
		}
	}
	if deliver, latency := num(t, m, "deliver_ms"), num(t, m, "read_latency_ms.max"); deliver+0.001 < latency {
		t.Errorf("deliver_ms %v is less than the largest latency to a read, %v ms", deliver, latency)
	}
}

// TestSmoke runs every mode at a tiny scale against Caddy with the hub.
// It checks correctness and the shape of the summaries, never speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	t.Parallel() // a Caddy and ports of its own
	admin, port := caddyproc.Port(smokeAdminBase), caddyproc.Port(smokeHTTPBase)
	c := caddyproc.Start(t, fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	grace_period 1s
}

http://localhost:%d {
	sse /events
	sse_publish /publish
}
`, admin, port, caddyproc.Port(smokeHTTPSBase), port), admin)
	pid := strconv.Itoa(c.PID())
	base := fmt.Sprintf("http://localhost:%d", port)
	subURL := "--sub-url=" + base + "/events?topic={topic}"
	pubURL := "--pub-url=" + base + "/publish"

	t.Run("idle", func(t *testing.T) {
		m := runTool(t, "idle", subURL, "-n", "20", "--duration", "1s", "--pid", pid, "--sources", "3")
		expectEqual(t, m, map[string]float64{"subscribers": 20, "connected": 20, "failed": 0, "dropped": 0, "server.pid": float64(c.PID())})
		for _, p := range []string{"server.rss_before_kib", "server.rss_after_kib", "tool.rss_after_kib", "hold_s"} {
			if num(t, m, p) <= 0 {
				t.Errorf("%s is not positive", p)
			}
		}
		num(t, m, "server.kib_per_sub")
	})
	t.Run("fanout form", func(t *testing.T) {
		m := runTool(t, "fanout", subURL, pubURL, "-n", "20", "--topics", "3", "--rate", "50", "--duration", "1s",
			"--warmup", "100ms", "--pid", pid)
		checkClean(t, m)
		expectEqual(t, m, map[string]float64{"connected": 20, "published": 50, "subscribed": 20})
		// 50 events over 3 topics (17, 17, 16) to 7, 7 and 6 subscribers
		expectEqual(t, m, map[string]float64{"expected": 7*17 + 7*17 + 6*16})
		num(t, m, "server.cpu_us_per_delivery")
		num(t, m, "tool.cpu_us_per_delivery")
	})
	t.Run("fanout json, goroutine reader, net/http publisher", func(t *testing.T) {
		m := runTool(t, "fanout", subURL, pubURL, "-n", "10", "--rate", "40", "--duration", "1s", "--warmup", "100ms",
			"--reader", "goroutine", "--pub-client", "http", "--pub-type", "application/json", "--pub-body", `{"topic":"{topic}","data":"{data}"}`,
			"--size", "200")
		checkClean(t, m)
		expectEqual(t, m, map[string]float64{"expected": 10 * 40})
	})
	t.Run("fanout raw body", func(t *testing.T) {
		m := runTool(t, "fanout", subURL, "--pub-url="+base+"/publish?topic={topic}", "--pub-type", "text/plain",
			"--pub-body", "{data}", "-n", "5", "--topics", "5", "--rate", "25", "--duration", "1s", "--warmup", "100ms")
		checkClean(t, m)
		expectEqual(t, m, map[string]float64{"expected": 25})
	})
	t.Run("search", func(t *testing.T) {
		// generous limits: the steps must pass on a busy machine too
		m := runTool(t, "search", subURL, pubURL, "-n", "10", "--rate", "20", "--rate-step", "20", "--rate-max", "40",
			"--duration", "500ms", "--warmup", "100ms", "--pause", "100ms", "--max-p99", "1m", "--late", "1m")
		expectEqual(t, m, map[string]float64{"max_rate_ok": 40, "connected": 10})
		if m["stopped_by"] != "rate-max reached" {
			t.Errorf("stopped by %v", m["stopped_by"])
		}
		steps, _ := m["steps"].([]any)
		if len(steps) != 2 {
			t.Fatalf("%d steps, want 2", len(steps))
		}
		for _, s := range steps {
			checkClean(t, s.(map[string]any))
		}
	})
	t.Run("publish", func(t *testing.T) {
		m := runTool(t, "publish", pubURL, "--publishers", "2", "--duration", "500ms", "--pid", pid)
		n := num(t, m, "published")
		if n == 0 {
			t.Fatal("nothing published")
		}
		expectEqual(t, m, map[string]float64{"errors": 0, "statuses.200": n, "publishers": 2})
		for _, p := range []string{"publishes_per_s", "latency_ms.p50", "latency_ms.p99", "server.cpu_s", "tool.cpu_us_per_publish"} {
			num(t, m, p)
		}
	})
	t.Run("fanout through streams", func(t *testing.T) {
		m := runTool(t, "fanout", subURL, pubURL, "--pub-stream", "--publishers", "2", "-n", "6", "--topics", "2",
			"--rate", "50", "--duration", "1s", "--warmup", "100ms")
		checkClean(t, m)
		expectEqual(t, m, map[string]float64{"published": 50, "expected": 3*25 + 3*25, "publishers_used": 2})
		if m["stream"] != true {
			t.Errorf("stream = %v", m["stream"])
		}
	})
	t.Run("fanout through ndjson streams", func(t *testing.T) {
		m := runTool(t, "fanout", subURL, pubURL, "--pub-stream", "--pub-type", "application/x-ndjson", "--publishers", "1",
			"-n", "6", "--topics", "3", "--rate", "30", "--duration", "1s", "--warmup", "100ms")
		checkClean(t, m)
		expectEqual(t, m, map[string]float64{"published": 30, "expected": 6 * 10})
	})
	t.Run("publish through streams", func(t *testing.T) {
		m := runTool(t, "publish", pubURL, "--pub-stream", "--publishers", "2", "--duration", "500ms", "--pid", pid)
		n := num(t, m, "published")
		if n < 100 {
			t.Fatalf("%v published", n)
		}
		expectEqual(t, m, map[string]float64{"errors": 0, "statuses.200": 2, "publishers": 2})
		num(t, m, "publishes_per_s")
		num(t, m, "server.cpu_us_per_publish")
	})
	t.Run("burst arrays", func(t *testing.T) {
		m := runTool(t, "burst", subURL, pubURL, "-n", "6", "--topics", "2", "--events", "200", "--batch", "100",
			"--publishers", "3", "--warmup", "100ms", "--pid", pid)
		checkBurst(t, m, 6, 100)
		expectEqual(t, m, map[string]float64{"published": 200, "publish_requests": 2, "batch": 100, "publishers": 3, "publishers_used": 2,
			"server.pid": float64(c.PID())})
		num(t, m, "server.cpu_s")
		num(t, m, "server.rss_peak_kib")
	})
	t.Run("burst through a stream", func(t *testing.T) {
		m := runTool(t, "burst", subURL, pubURL, "--pub-stream", "-n", "4", "--events", "200", "--warmup", "100ms")
		checkBurst(t, m, 4, 200)
		expectEqual(t, m, map[string]float64{"published": 200, "publish_requests": 1, "publishers": 1, "publishers_used": 1})
		if m["stream"] != true {
			t.Errorf("stream = %v", m["stream"])
		}
	})
	t.Run("refused", func(t *testing.T) {
		m := runTool(t, "idle", "--sub-url="+base+"/nowhere", "-n", "3", "--duration", "100ms")
		expectEqual(t, m, map[string]float64{"connected": 0, "failed": 3})
	})
}

// TestLossAndDuplicates runs fanout against a hub that drops and repeats
// events on purpose, and checks that the tool counts exactly those.
func TestLossAndDuplicates(t *testing.T) {
	hub := newFaultyHub()
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.close()
	const subs, events = 4, 100
	m := runTool(t, "fanout", "--sub-url="+srv.URL+"/events?topic={topic}", "--pub-url="+srv.URL+"/publish",
		"-n", strconv.Itoa(subs), "--rate", "200", "--duration", "500ms", "--warmup", "100ms", "--grace", "300ms",
		"--sources", "0")
	// seq%10 == 3 never arrives, seq%10 == 5 arrives twice, seq%50 == 7
	// is refused (503) yet delivered
	expectEqual(t, m, map[string]float64{
		"published":        events,
		"publish_errors":   2,
		"expected":         subs * (events - 2),
		"lost":             subs * 10,
		"duplicated":       subs * 10,
		"distinct":         subs * (events - 10),
		"unacked_received": subs * 2,
		"received":         subs * (events - 10 + 10),
	})
	if m["ok"] != false || !strings.Contains(fmt.Sprint(m["why"]), "failed") {
		t.Errorf("ok = %v, why = %v", m["ok"], m["why"])
	}
}

// fakeHub is a small SSE hub for the tool's tests: publish (its own
// rule) hands events to broadcast, which queues them for every stream;
// a stream writes each in the hub's format, and ends after N events when
// its URL has cut=N.
type fakeHub struct {
	mu      sync.Mutex
	subs    map[chan string]bool
	done    chan struct{}
	format  string // an event, with %s for its data
	publish func(h *fakeHub, w http.ResponseWriter, r *http.Request)
}

func newFakeHub(format string, publish func(*fakeHub, http.ResponseWriter, *http.Request)) *fakeHub {
	return &fakeHub{subs: make(map[chan string]bool), done: make(chan struct{}), format: format, publish: publish}
}

func (h *fakeHub) close() { close(h.done) }

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/events":
		h.stream(w, r)
	case "/publish":
		h.publish(h, w, r)
	default:
		http.NotFound(w, r)
	}
}

func (h *fakeHub) stream(w http.ResponseWriter, r *http.Request) {
	cut, _ := strconv.Atoi(r.URL.Query().Get("cut"))
	ch := make(chan string, 10000)
	h.mu.Lock()
	h.subs[ch] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for sent := 0; cut == 0 || sent < cut; sent++ {
		select {
		case data := <-ch:
			fmt.Fprintf(w, h.format, data)
			_ = rc.Flush()
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		}
	}
}

// broadcast queues data copies times for every stream, and returns how
// many streams there are.
func (h *fakeHub) broadcast(data string, copies int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		for range copies {
			ch <- data
		}
	}
	return len(h.subs)
}

// newFaultyHub returns a hub that loses, repeats and refuses events by
// their sequence number.
func newFaultyHub() *fakeHub {
	return newFakeHub(": comment\nid: 1\ndata: %s\n\n", publishFaulty)
}

func publishFaulty(h *fakeHub, w http.ResponseWriter, r *http.Request) {
	data := r.FormValue("data")
	_, seq, _, ok := parsePayload([]byte(data))
	if !ok {
		http.Error(w, "bad data", http.StatusBadRequest)
		return
	}
	copies := 1
	switch {
	case seq%10 == 3:
		copies = 0
	case seq%10 == 5:
		copies = 2
	}
	h.broadcast(data, copies)
	if seq%50 == 7 {
		http.Error(w, "refused after delivering", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}
