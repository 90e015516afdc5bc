//go:build unix

package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// wait is the safety net of every wait in these tests: generous, because
// two cores are shared with other work. Waits end as soon as their
// condition holds.
const wait = 15 * time.Second

// chromiumPath returns the Chromium to test with: $SSE_CHROMIUM, else the
// first of chromium and chromium-browser on $PATH, else "".
func chromiumPath() string {
	if p := os.Getenv("SSE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// needChromium returns the Chromium to test with, or skips the test when
// there is none (fails it, if SSE_REQUIRE_BROWSER is set, as in CI).
func needChromium(t *testing.T) string {
	t.Helper()
	path := chromiumPath()
	if path == "" && os.Getenv("SSE_REQUIRE_BROWSER") != "" {
		t.Fatal("no Chromium found, and SSE_REQUIRE_BROWSER is set: install Debian's chromium (apt-get install chromium)")
	}
	if path == "" {
		t.Skip("no Chromium found: install Debian's chromium (apt-get install chromium) " +
			"or set SSE_CHROMIUM to a Chromium binary; the browser tests need a real browser")
	}
	return path
}

// chromium is a headless Chromium with one tab, driven over the DevTools
// protocol, and the log of the requests that tab made.
type chromium struct {
	t       *testing.T
	ctx     context.Context // the tab's
	dataDir string          // its fresh profile
	net     *netLog
	output  *caddyproc.LockedBuffer // what Chromium printed
}

// startChromium starts a headless Chromium with a fresh profile. It is
// closed, and every one of its processes is checked to be gone, when the
// test ends. Without Chromium the test is skipped. QUIC is off (so that
// Caddy's Alt-Svc header does not move HTTPS sites to HTTP/3) unless
// extraFlags has enable-quic.
func startChromium(t *testing.T, extraFlags ...string) *chromium {
	t.Helper()
	path := needChromium(t)
	dataDir, err := os.MkdirTemp("", "caddy-sse-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	c := &chromium{t: t, dataDir: dataDir, net: newNetLog(), output: new(caddyproc.LockedBuffer)}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(c.dataDir),
		chromedp.WindowSize(1280, 900),
	}
	flags := []string{"headless", "no-sandbox", "disable-gpu", "no-first-run",
		"disable-background-networking", "disable-component-update", "disable-sync",
		"no-default-browser-check", "hide-scrollbars", "mute-audio"}
	if !slices.Contains(extraFlags, "enable-quic") {
		flags = append(flags, "disable-quic")
	}
	for _, f := range append(flags, extraFlags...) {
		name, value, hasValue := strings.Cut(f, "=")
		if hasValue {
			opts = append(opts, chromedp.Flag(name, value))
		} else {
			opts = append(opts, chromedp.Flag(name, true))
		}
	}
	opts = append(opts, chromedp.CombinedOutput(c.output))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	logs := &testLogger{t: t}
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logs.logf))
	c.ctx = ctx
	t.Cleanup(func() {
		cancelTab() // closes the browser gracefully
		cancelAlloc()
		logs.stop()
		c.checkGone()
		c.removeDataDir()
		if t.Failed() {
			t.Logf("chromium's output (without its D-Bus complaints):\n%s", withoutLines(c.output.String(), "dbus"))
		}
	})
	chromedp.ListenTarget(ctx, c.net.handle)
	// The first Run starts Chromium, which lives as long as the context
	// given to it: the tab's, not one with a time limit. Chromium's start
	// is bounded by chromedp's wait for its DevTools address (20s).
	if err := chromedp.Run(ctx, network.Enable()); err != nil {
		t.Fatalf("starting chromium (%s): %v", path, err)
	}
	return c
}

// newTab opens another tab in the same browser for test t, with a log of
// its own requests; it is closed when t ends. Tests that share a browser
// this way start it once.
func (c *chromium) newTab(t *testing.T) *chromium {
	t.Helper()
	ctx, cancel := chromedp.NewContext(c.ctx)
	tab := &chromium{t: t, ctx: ctx, dataDir: c.dataDir, net: newNetLog(), output: c.output}
	chromedp.ListenTarget(ctx, tab.net.handle)
	if err := chromedp.Run(ctx, network.Enable()); err != nil {
		cancel()
		t.Fatalf("opening a tab: %v", err)
	}
	t.Cleanup(cancel) // closes the tab
	return tab
}

// checkGone fails the test if any process of this browser (they all have
// its profile directory on their command line) is still running after a
// while, and kills those.
func (c *chromium) checkGone() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := processesWith("--user-data-dir=" + c.dataDir)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("chromium processes left running: %v; killing them", pids)
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeDataDir removes the browser's profile. Chromium's helper processes
// may outlive its main process for a moment and still write there, so
// removal is tried again for a while.
func (c *chromium) removeDataDir() {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.RemoveAll(c.dataDir)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("removing chromium's profile: %v", err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesWith returns the ids of the processes that have arg on their
// command line. Chromium retitles some of its processes, which turns
// their command line into one string of space-separated arguments.
func processesWith(arg string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, dir := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.FieldsFunc(string(cmdline), func(r rune) bool { return r == 0 || r == ' ' })
		for _, a := range args {
			if a == arg {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// in returns the browser for use by test t, a subtest.
func (c *chromium) in(t *testing.T) *chromium {
	cc := *c
	cc.t = t
	return &cc
}

// run runs actions in the tab, with a time limit.
func (c *chromium) run(actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(c.ctx, wait)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}

// navigate loads url in the tab and waits for it to load.
func (c *chromium) navigate(url string) {
	c.t.Helper()
	if err := c.run(chromedp.Navigate(url)); err != nil {
		c.t.Fatalf("loading %s: %v", url, err)
	}
}

// eval evaluates a JavaScript expression in the page, waits for it if it
// is a promise, and decodes its JSON value into out (unless out is nil).
func (c *chromium) eval(expr string, out any) error {
	var raw json.RawMessage
	err := c.run(chromedp.Evaluate(expr, &raw, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
	if err != nil {
		return fmt.Errorf("evaluating %s: %w", expr, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding the value of %s (%s): %w", expr, raw, err)
	}
	return nil
}

// mustEval is eval that fails the test on error.
func (c *chromium) mustEval(expr string, out any) {
	c.t.Helper()
	if err := c.eval(expr, out); err != nil {
		c.t.Fatal(err)
	}
}

// js formats a JavaScript expression, with each argument as its JSON
// encoding.
func js(format string, args ...any) string {
	enc := make([]any, len(args))
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			panic(err)
		}
		enc[i] = string(b)
	}
	return fmt.Sprintf(format, enc...)
}

// waitUntil polls cond until it holds, or fails the test after timeout.
// what says what was awaited; detail, called on failure, says what was
// seen instead.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %v waiting until %s", timeout, what)
			if detail != nil {
				msg += "\n" + detail()
			}
			t.Fatal(msg)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// netRequest is one request of the tab, as the DevTools protocol saw it.
type netRequest struct {
	ID       string
	URL      string
	Method   string
	Type     string            // Document, EventSource, Fetch, Preflight, ...
	Headers  map[string]string // as sent on the wire, lowercase names
	Sent     time.Time         // when the browser was about to send it
	Status   int64             // 0 until a response arrived
	Protocol string            // http/1.1, h2
	Conn     float64           // the id of the connection it used
	Failed   string            // the error, if loading failed
	CORS     string            // the CORS error, if any
}

// netLog records the tab's network events.
type netLog struct {
	mu    sync.Mutex
	order []string
	reqs  map[string]*netRequest
}

func newNetLog() *netLog { return &netLog{reqs: make(map[string]*netRequest)} }

func (l *netLog) get(id network.RequestID) *netRequest {
	r := l.reqs[string(id)]
	if r == nil {
		r = &netRequest{ID: string(id)}
		l.reqs[string(id)] = r
		l.order = append(l.order, string(id))
	}
	return r
}

// handle records one DevTools event; it is called by chromedp's event loop
// and must not block.
func (l *netLog) handle(ev any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		r := l.get(ev.RequestID)
		r.URL, r.Method, r.Type = ev.Request.URL, ev.Request.Method, string(ev.Type)
		if ev.WallTime != nil {
			r.Sent = ev.WallTime.Time()
		}
	case *network.EventRequestWillBeSentExtraInfo:
		r := l.get(ev.RequestID)
		r.Headers = make(map[string]string, len(ev.Headers))
		for k, v := range ev.Headers {
			r.Headers[strings.ToLower(k)] = fmt.Sprint(v)
		}
	case *network.EventResponseReceived:
		r := l.get(ev.RequestID)
		r.Status, r.Protocol, r.Conn = ev.Response.Status, ev.Response.Protocol, ev.Response.ConnectionID
	case *network.EventResponseReceivedExtraInfo:
		r := l.get(ev.RequestID)
		if r.Status == 0 {
			r.Status = ev.StatusCode
		}
	case *network.EventLoadingFailed:
		r := l.get(ev.RequestID)
		r.Failed = ev.ErrorText
		if ev.CorsErrorStatus != nil {
			r.CORS = string(ev.CorsErrorStatus.CorsError)
		}
	}
}

// requests returns copies of the requests whose URL contains substr, in
// the order they were first seen.
func (l *netLog) requests(substr string) []netRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []netRequest
	for _, id := range l.order {
		if r := l.reqs[id]; strings.Contains(r.URL, substr) {
			out = append(out, *r)
		}
	}
	return out
}

// String lists every request, for failure messages.
func (l *netLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, id := range l.order {
		r := l.reqs[id]
		fmt.Fprintf(&b, "  %s %s %s [%s] %d %s conn %v %s %s last-event-id=%q\n", r.Sent.Format("15:04:05.000"),
			r.Method, r.URL, r.Type, r.Status, r.Protocol, r.Conn, r.Failed, r.CORS, r.Headers["last-event-id"])
	}
	return b.String()
}

// testLogger passes chromedp's error messages to the test log until the
// test ends (logging after that panics).
type testLogger struct {
	mu      sync.Mutex
	t       *testing.T
	stopped bool
}

func (l *testLogger) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Logf("chromedp: "+format, args...)
	}
}

func (l *testLogger) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}

// withoutLines returns text without the lines that contain substr.
func withoutLines(text, substr string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if !strings.Contains(line, substr) {
			b.WriteString(line)
		}
	}
	return b.String()
}
