//go:build unix

package browser

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// The reconnection delay these tests expect when the server ends a stream
// (max_age, reload): the final retry hint, uniform over [d/2, 3d/2) with d
// the route's retry (4s: at least 2 s away, for the test to publish while
// the browser is away, on a busy machine too), so 2-6s here, plus time
// for a busy machine. (That the browser obeys the hint rather than its own 3s default
// is shown by TestOverCapacity, whose hint is 5s and more.)
const (
	minReconnect = 1900 * time.Millisecond
	maxReconnect = 7 * time.Second
)

// TestReconnectResumes ends the page's stream from the server, by max_age
// and by a config reload, publishes while the browser is away, and checks
// that the browser comes back after about the retry hint it was sent,
// sends Last-Event-ID, and that the page gets every event exactly once and
// in order.
func TestReconnectResumes(t *testing.T) {
	t.Parallel() // mostly waiting for the browser to come back: alongside the others that wait
	t.Run("max_age", func(t *testing.T) { t.Parallel(); reconnectAfterMaxAge(t, plain, 2, "") })
	t.Run("max_age with hijack", func(t *testing.T) { t.Parallel(); reconnectAfterMaxAge(t, plain, 12, "hijack") })
	t.Run("reload", func(t *testing.T) { t.Parallel(); reconnectAfterReload(t, plain, 3) })
}

// reconnectAfterMaxAge runs resumeCycles on streams that max_age ends,
// with more options for the sse route.
func reconnectAfterMaxAge(t *testing.T, e *env, n int, options string) {
	p := e.ports(n)
	base := e.base(p)
	c := startCaddy(t, p, e.caddyfile(p, "", e.site(t, p, `
	sse /events {
		retry 4s
		max_age 2s
		`+options+`
	}
	sse_publish /publish`)))
	resumeCycles(t, e, base, c, func() {})
}

// reconnectAfterReload runs resumeCycles on streams that config reloads
// end.
func reconnectAfterReload(t *testing.T, e *env, n int) {
	p := e.ports(n)
	base := e.base(p)
	config := func(generation int) string {
		return e.caddyfile(p, "", e.site(t, p, fmt.Sprintf(`
	sse /events {
		retry 4s
	}
	sse_publish /publish
	respond /generation %d`, generation)))
	}
	c := startCaddy(t, p, config(0))
	generation := 0
	resumeCycles(t, e, base, c, func() {
		generation++
		if err := c.Load(config(generation)); err != nil {
			t.Fatal(err)
		}
	})
}

// resumeCycles subscribes a page to the site at base, then twice: publishes
// two events and waits for them, calls end (which ends the stream, or does
// nothing when the stream ends by itself), waits for the server to end
// the stream, publishes three events while the browser waits to
// reconnect (the server counts no subscriber after them), and waits for
// the page to see the end and come back. The page must have received
// every event once, in order, and each reconnection must have sent the id
// of the last event received.
func resumeCycles(t *testing.T, e *env, base string, c *caddyproc.Caddy, end func()) {
	t.Helper()
	pg := e.browser(t).openHarness(base)
	src := pg.open("/events?topic=resume", sourceOptions{})
	pg.waitOpen(src, 1)
	var want, wantData []string
	var lastIDs []string // the last id received before each reconnection
	pub := func(what string, n int) {
		for i := range n {
			data := fmt.Sprintf("%s %d", what, i)
			want = append(want, publishData(t, base+"/publish", "resume", data))
			wantData = append(wantData, data)
		}
	}
	const cycles = 2
	for cycle := range cycles {
		pub(fmt.Sprintf("cycle %d live", cycle), 2)
		pg.waitEvents(src, len(want))
		lastIDs = append(lastIDs, want[len(want)-1])
		end()
		// The server's count of subscribers says when the stream has
		// ended and that the browser was still away once the events were
		// published (the page's log, read through DevTools, can lag by
		// seconds on a busy machine).
		waitUntil(t, wait, fmt.Sprintf("the server ends stream %d", cycle+1), func() bool { return subscribers(t, c) == 0 }, nil)
		pub(fmt.Sprintf("cycle %d while away", cycle), 3)
		if n := subscribers(t, c); n != 0 {
			t.Fatalf("the browser reconnected before the events were published (%d subscribers); the test proves nothing:\n%s", n, dump(pg.entries()))
		}
		pg.waitFor(fmt.Sprintf("stream %d ended", cycle+1), func(es []entry) bool {
			return len(only(es, src, "error")) > cycle
		})
		pg.waitOpen(src, cycle+2)
	}
	got := pg.waitEvents(src, len(want))
	es := pg.entries()
	checkExactly(t, got, want, wantData)
	checkReconnectDelays(t, es, src, minReconnect, maxReconnect)

	// Each reconnection sent the id of an event received before it: the
	// first request none, the later ones ids in order, among them the
	// last id before each cycle's end. (On a busy machine max_age may end
	// a stream once more between two cycles: that reconnection sends the
	// id of the last event replayed to it.)
	var sent []string
	for _, r := range pg.net.requests("/events") {
		sent = append(sent, r.Headers["last-event-id"])
	}
	if !sentInOrder(sent, want, lastIDs) {
		t.Errorf("Last-Event-ID of the requests: %q; want \"\" then ids of %q in order, with %q among them\n%s", sent, want, lastIDs, pg.net)
	}
	e.checkProtocol(t, pg.chromium, base)
}

// sentInOrder reports whether sent, the Last-Event-ID of each request,
// is "" and then ids of want (the events' ids, in order) in their order,
// each of lastIDs among them.
func sentInOrder(sent, want, lastIDs []string) bool {
	if len(sent) == 0 || sent[0] != "" {
		return false
	}
	at := -1
	for _, id := range sent[1:] {
		i := slices.Index(want, id)
		if i < at || i < 0 {
			return false
		}
		at = i
	}
	for _, id := range lastIDs {
		if !slices.Contains(sent, id) {
			return false
		}
	}
	return true
}

// checkExactly checks that the page got the events with ids want and data
// wantData, each once and in order.
func checkExactly(t *testing.T, got []entry, want, wantData []string) {
	t.Helper()
	var ids, data []string
	for _, e := range got {
		ids = append(ids, e.ID)
		data = append(data, e.Data)
	}
	if !slices.Equal(ids, want) || !slices.Equal(data, wantData) {
		t.Fatalf("the page got\n%s\nwant ids %q\ndata %q", dump(got), want, wantData)
	}
}

// checkReconnectDelays checks the time from each error of source src to
// its next open.
func checkReconnectDelays(t *testing.T, es []entry, src int, lo, hi time.Duration) {
	t.Helper()
	var errAt float64 = -1
	for _, e := range es {
		if e.Src != src {
			continue
		}
		switch {
		case e.Kind == "error" && errAt < 0:
			errAt = e.T
		case e.Kind == "open" && errAt >= 0:
			d := time.Duration((e.T - errAt) * float64(time.Millisecond))
			if d < lo || d > hi {
				t.Errorf("reconnected %v after the stream ended, want %v to %v:\n%s", d, lo, hi, dump(es))
			} else {
				t.Logf("reconnected %v after the stream ended", d.Round(time.Millisecond))
			}
			errAt = -1
		}
	}
}

// TestResetAfterRestart restarts Caddy, whose memory transport forgets
// every event, while a page is subscribed: the browser reconnects with an
// id of the old epoch and the page gets the reset event, with that id,
// before the events published since.
func TestResetAfterRestart(t *testing.T) {
	t.Parallel()
	resetAfterRestart(t, plain, 4)
}

func resetAfterRestart(t *testing.T, e *env, n int) {
	p := e.ports(n)
	base := e.base(p)
	cfg := e.caddyfile(p, "", e.site(t, p, `
	sse /events {
		retry 500ms
	}
	sse_publish /publish`))
	c := startCaddy(t, p, cfg)
	pg := e.browser(t).openHarness(base)
	src := pg.open("/events?topic=epochs", sourceOptions{Types: []string{"reset"}})
	pg.waitOpen(src, 1)
	publishData(t, base+"/publish", "epochs", "before 1")
	lastOld := publishData(t, base+"/publish", "epochs", "before 2")
	pg.waitEvents(src, 2)

	restart(t, c, p, cfg)
	if e.secure {
		awaitCertificate(t, p, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // Caddy's internal CA, in tests
	}
	after := publishData(t, base+"/publish", "epochs", "after")
	if epoch(after) == epoch(lastOld) {
		t.Fatalf("the restarted hub kept its epoch: %s, then %s", lastOld, after)
	}
	got := pg.patient(e.restartWait()).waitEvents(src, 4)
	checkReconnectDelays(t, pg.entries(), src, 0, e.restartWait())
	reset, next := got[2], got[3]
	var data struct {
		LastEventID string `json:"last_event_id"`
	}
	if err := json.Unmarshal([]byte(reset.Data), &data); reset.Type != "reset" || err != nil || data.LastEventID != lastOld {
		t.Fatalf("after the restart the page got %v, want a reset event for %s", reset, lastOld)
	}
	if next.Type != "message" || next.ID != after || next.Data != "after" {
		t.Fatalf("after the reset the page got %v, want the event %s", next, after)
	}
	// The reconnection (perhaps after refused attempts while Caddy was
	// down) sent the old id.
	reqs := pg.net.requests("/events")
	if last := reqs[len(reqs)-1]; last.Headers["last-event-id"] != lastOld || last.Status != 200 {
		t.Fatalf("the reconnection: %+v, want Last-Event-ID %s and 200\n%s", last, lastOld, pg.net)
	}
	e.checkProtocol(t, pg.chromium, base)
}

// restart stops Caddy with SIGTERM and starts a new one on the same config
// and ports.
func restart(t *testing.T, c *caddyproc.Caddy, p ports, cfg string) *caddyproc.Caddy {
	t.Helper()
	if _, err := c.Terminate(10 * time.Second); err != nil {
		t.Fatalf("caddy did not stop: %v", err)
	}
	return startCaddy(t, p, cfg)
}

// epoch is the epoch part of an event id, <epoch>-<n>.
func epoch(id string) string {
	e, _, _ := strings.Cut(id, "-")
	return e
}

// TestOverCapacity subscribes twice to a route that takes one subscriber:
// the second EventSource is told to retry later (a 200 with a long retry
// hint, which the page sees as open then error), not refused for good, and
// connects once the first one closes.
func TestOverCapacity(t *testing.T) {
	t.Parallel()
	overCapacity(t, plain, 5)
}

func overCapacity(t *testing.T, e *env, n int) {
	p := e.ports(n)
	base := e.base(p)
	startCaddy(t, p, e.caddyfile(p, "", e.site(t, p, `
	sse /events {
		max_subscribers 1
		retry 500ms
		replay 1
	}
	sse_publish /publish`)))
	pg := e.browser(t).openHarness(base)
	first := pg.open("/events?topic=full", sourceOptions{})
	pg.waitOpen(first, 1)

	second := pg.open("/events?topic=full", sourceOptions{})
	pg.waitFor("the second source was told to come back later", func(es []entry) bool {
		return len(only(es, second, "error")) > 0
	})
	if states := pg.states(); states[second] != connecting {
		t.Fatalf("the second source is in state %d, want %d (it must retry, not give up)", states[second], connecting)
	}
	// The refusal is a 200 event stream: the page sees it open, then end.
	var kinds []string
	for _, e := range pg.entries() {
		if e.Src == second {
			kinds = append(kinds, e.Kind)
		}
	}
	if !slices.Equal(kinds, []string{"open", "error"}) {
		t.Fatalf("the refused source's log: %v, want open, error", kinds)
	}
	pg.close(first)
	id := publishData(t, base+"/publish", "full", "for the second")
	got := pg.waitEvents(second, 1)
	if got[0].ID != id {
		t.Fatalf("the second source got %v, want the event %s", got[0], id)
	}
	// It came back after the capacity retry hint (5s and more), not after
	// the route's 500ms.
	checkReconnectDelays(t, pg.entries(), second, 4900*time.Millisecond, 9500*time.Millisecond)
	reqs := pg.net.requests("/events")
	if len(reqs) != 3 || reqs[1].Status != 200 || reqs[2].Status != 200 {
		t.Fatalf("requests: want the first source's, then the second's refusal and its reconnection, all 200:\n%s", pg.net)
	}
	e.checkProtocol(t, pg.chromium, base)
}

// states returns the readyState of every source of the page.
func (p *page) states() []int {
	p.t.Helper()
	var s []int
	p.mustEval("harness.states()", &s)
	return s
}
