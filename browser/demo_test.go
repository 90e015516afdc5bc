//go:build unix

package browser

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// demoConfig returns Caddyfile.example moved to this test's ports, serving
// the demo from this checkout, on loopback only; in a secure run, over
// HTTPS on 127.0.0.1 with Caddy's internal CA.
func demoConfig(t *testing.T, e *env, p ports) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	demo, err := filepath.Abs(filepath.Join("..", "examples", "demo"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	moves := map[string]string{
		"localhost:8080":       fmt.Sprintf("localhost:%d", p.http),
		"root * examples/demo": "root * " + demo,
	}
	if e.secure {
		delete(moves, "localhost:8080")
		moves["http://localhost:8080 {"] = fmt.Sprintf("%s {\n\ttls internal", e.base(p))
	}
	for old, repl := range moves {
		if !strings.Contains(cfg, old) {
			t.Fatalf("Caddyfile.example has no %q; update this test", old)
		}
		cfg = strings.ReplaceAll(cfg, old, repl)
	}
	global := fmt.Sprintf("{\n\tadmin localhost:%d\n\thttp_port %d\n\thttps_port %d\n\tdefault_bind 127.0.0.1\n",
		p.admin, p.http, p.https)
	if e.secure {
		global += "\t" + e.secureOptions() + "\n"
	}
	i := strings.Index(cfg, "{\n")
	if i < 0 {
		t.Fatal("Caddyfile.example has no global options block")
	}
	return cfg[:i] + global + cfg[i+2:]
}

// TestDemoPage runs the demo of Caddyfile.example with real events: the
// page shows its connection state, events as they arrive with their type,
// id and time, publishes through its form, and shows the reset event after
// a restart of Caddy. It saves a screenshot, into docs/demo.png when
// SSE_SCREENSHOT=1.
func TestDemoPage(t *testing.T) {
	t.Parallel() // a Caddy, ports and a Chromium of its own
	demoPage(t, plain, 10)
}

func demoPage(t *testing.T, e *env, n int) {
	p := e.ports(n)
	base := fmt.Sprintf("http://localhost:%d", p.http)
	if e.secure {
		base = e.base(p)
	}
	cfg := demoConfig(t, e, p)
	c := startCaddy(t, p, cfg)
	br := e.browser(t)
	if err := br.run(chromedp.EmulateViewport(1280, 720)); err != nil {
		t.Fatal(err)
	}
	br.navigate(base + "/")
	waitState(t, br, "open")
	// presence: the page is the one visitor of its topic
	waitFor(t, br, "the demo shows who is here", `document.querySelector("#here").textContent === "1 here"`)

	pub := base + "/publish"
	publish(t, pub,
		event{Topic: "demo", Event: "greeting", Data: "Hello from caddy-sse 👋"},
		event{Topic: "demo", Event: "price", Data: `{"symbol":"EUR/USD","bid":1.0842,"ask":1.0844}`},
		event{Topic: "demo", Event: "log", Data: "build #1042 started\nstep 1/3: go vet ./..."},
	)
	waitDemoEvents(t, br, 3)

	// a restart forgets the memory transport's history: the page is told
	restart(t, c, p, cfg)
	waitUntil(t, e.restartWait(), "the demo's state is open again", func() bool {
		var ok bool
		return br.eval(`document.body.dataset.state === "open"`, &ok) == nil && ok
	}, nil)
	waitFor(t, br, "the reset event is shown", `document.querySelector("#events li.reset") !== null`)
	waitFor(t, br, "a fresh snapshot of who is here", `document.querySelector("#here").textContent === "1 here"`)
	publish(t, pub,
		event{Topic: "demo", Event: "update", Data: "deploy finished in 42s ✅"},
		event{Topic: "demo", Data: "a plain message, without a type"},
	)
	// and one through the page's own form
	err := br.run(
		chromedp.SetValue("#pub-event", "notification", chromedp.ByID),
		chromedp.SetValue("#pub-data", "New comment on “Release notes”: looks great!", chromedp.ByID),
		chromedp.Click(`#publish-form button[type="submit"]`, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("publishing with the form: %v", err)
	}
	waitFor(t, br, "the form's publish is acknowledged", `document.querySelector("#publish-result").textContent.startsWith("published")`)
	waitDemoEvents(t, br, 7) // 3 + reset + 2 + 1

	// The newest row is the form's event, with its type, id and time.
	var shown struct {
		Reconnects, LastID, Result string
		Newest                     []string
	}
	br.mustEval(`(() => {
		const li = document.querySelector("#events li:not(.system)");
		return {
			Reconnects: document.querySelector("#reconnects").textContent,
			LastID: document.querySelector("#last-id").textContent,
			Result: document.querySelector("#publish-result").textContent,
			Newest: [".time", ".type", ".data", ".id"].map((s) => li.querySelector(s).textContent),
		};
	})()`, &shown)
	if shown.Reconnects != "1" {
		t.Errorf("reconnections shown: %q, want 1", shown.Reconnects)
	}
	if !strings.Contains(shown.Result, shown.LastID) || len(shown.Newest) != 4 ||
		shown.Newest[1] != "notification" || shown.Newest[3] != "id "+shown.LastID ||
		!strings.HasPrefix(shown.Newest[2], "New comment") || len(shown.Newest[0]) != len("15:04:05.000") {
		t.Errorf("the form's event is shown as %q; last id %q, publish result %q", shown.Newest, shown.LastID, shown.Result)
	}
	e.checkRequests(t, br, base)
	if !e.secure {
		screenshot(t, br)
	}
}

// waitState waits until the demo shows its connection state as state.
func waitState(t *testing.T, br *chromium, state string) {
	t.Helper()
	waitFor(t, br, "the demo's state is "+state, js(`document.body.dataset.state === %s`, state))
}

// waitDemoEvents waits until the demo lists n events.
func waitDemoEvents(t *testing.T, br *chromium, n int) {
	t.Helper()
	waitFor(t, br, fmt.Sprintf("the demo lists %d events", n),
		fmt.Sprintf(`document.querySelectorAll("#events li:not(.system)").length >= %d`, n))
}

// waitFor waits until the JavaScript expression cond is true in the page.
func waitFor(t *testing.T, br *chromium, what, cond string) {
	t.Helper()
	waitUntil(t, wait, what, func() bool {
		var ok bool
		return br.eval(cond, &ok) == nil && ok
	}, func() string {
		var html string
		_ = br.eval(`document.querySelector("main").outerHTML`, &html)
		return "page: " + html
	})
}

// screenshot saves a PNG of the page: to docs/demo.png with
// SSE_SCREENSHOT=1, else into the test's temporary directory.
func screenshot(t *testing.T, br *chromium) {
	t.Helper()
	// let the arrival highlight of the last events fade
	waitFor(t, br, "animations ended", `document.getAnimations().length === 0 ||
		document.getAnimations().every((a) => a.playState !== "running" || a.effect.getComputedTiming().iterations === Infinity)`)
	var png []byte
	if err := br.run(chromedp.CaptureScreenshot(&png)); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), "demo.png")
	if os.Getenv("SSE_SCREENSHOT") == "1" {
		path = filepath.Join("..", "docs", "demo.png")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}
