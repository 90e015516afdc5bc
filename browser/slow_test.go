//go:build unix

package browser

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestHeartbeats reads a quiet stream with fetch() for 3.5 s, heartbeat
// 1s: the page receives a comment at least every second, each as it is
// written, held back by no buffer on the way (Caddy's, the protocol's,
// Chromium's).
func TestHeartbeats(t *testing.T) { heartbeats(t, plain, 13) }

func heartbeats(t *testing.T, e *env, n int) {
	p := e.ports(n)
	base := e.base(p)
	startCaddy(t, p, e.caddyfile(p, "", e.site(t, p, `
	sse /events {
		heartbeat 1s
	}`)))
	pg := e.browser(t).openHarness(base)
	var res struct {
		Status int `json:"status"`
		Pieces []struct {
			T    float64 `json:"t"`
			Text string  `json:"text"`
		} `json:"pieces"`
		Error string `json:"error"`
	}
	pg.mustEval(js(`harness.readFor(%s, 3500)`, "/events?topic=beat"), &res)
	if res.Status != 200 || res.Error != "" || len(res.Pieces) == 0 {
		t.Fatalf("reading the stream: %+v", res)
	}
	var text strings.Builder
	beats, maxGap := 0, 0.0
	for i, piece := range res.Pieces {
		text.WriteString(piece.Text)
		if i > 0 {
			maxGap = max(maxGap, piece.T-res.Pieces[i-1].T)
		}
		for line := range strings.Lines(piece.Text) {
			if strings.HasPrefix(line, ":") {
				beats++
			}
		}
	}
	t.Logf("%d heartbeats in %d pieces, longest silence %.0f ms", beats, len(res.Pieces), maxGap)
	if !strings.HasPrefix(text.String(), "retry: ") || strings.Contains(text.String(), "data:") {
		t.Errorf("the stream: %q", text.String())
	}
	if beats < 3 || maxGap > 1500 {
		t.Errorf("%d heartbeats in 3.5 s, longest silence %.0f ms; want 3 or more, a second apart at most:\n%+v",
			beats, maxGap, res.Pieces)
	}
	e.checkProtocol(t, pg.chromium, base)
}

// slowEvents and slowBatch: the slow page test publishes slowEvents
// events of 64 KiB (10 MiB), slowBatch per request: many times what the
// kernel and a throttled Chromium hold for one stream over any of the
// protocols (0.6 MiB over HTTP/1.1 in our runs).
const (
	slowEvents = 160
	slowBatch  = 20
)

// TestSlowPage throttles the page's downloads to 32 KiB/s while 10 MiB
// of events are published to its stream: the server's writes stall once
// the browser's buffers (and, over HTTP/2 and HTTP/3, its flow-control
// windows) are full, and the stream, whose write_timeout is 2 s, is
// dropped as slow (the history still holds everything it was not sent).
// Once the throttle is lifted, its EventSource reads what was buffered,
// sees the stream end, reconnects with the id of the last event it got,
// and gets the rest from history: every event once, in order.
func TestSlowPage(t *testing.T) {
	t.Parallel() // a Caddy, ports and a Chromium of its own
	slowPage(t, plain, 14)
}

// slowPageMu keeps two slow page tests (the HTTP/2 and HTTP/3 runs go side
// by side) from running at once: when its throttle is lifted, each page
// takes in 10 MiB at once, and two of them on a busy machine starve
// their tabs past the harness's waits.
var slowPageMu sync.Mutex

// slowWait is the safety net of the slow page test's waits: 10 MiB go
// through Caddy, TLS and Chromium on a machine that may be busy.
const slowWait = 3 * wait

func slowPage(t *testing.T, e *env, n int) {
	slowPageMu.Lock()
	defer slowPageMu.Unlock()
	p := e.ports(n)
	base := e.base(p)
	c := startCaddy(t, p, e.caddyfile(p, `sse {
		hub default {
			history 1000
			history_max_bytes 64MiB
		}
	}`, e.site(t, p, `
	sse /events {
		write_timeout 2s
		retry 500ms
		heartbeat 1m
	}
	sse_publish /publish {
		max_size 8MiB
	}`)))
	pg := e.browser(t).openHarness(base)
	pg.within = slowWait
	throttle(t, pg.chromium, 32<<10)
	src := pg.open("/events?topic=slow", sourceOptions{Summary: true})
	pg.waitOpen(src, 1)
	slowBefore := slowDrops(t, c)

	// The page's downloads are throttled to 32 KiB/s with DevTools' network
	// conditions, which hold back the network service's reads of the
	// connection: what the browser does not read stays in the kernel, and
	// the server's writes stall once the socket buffers (and, over HTTP/2
	// and HTTP/3, the flow-control windows) are full. A busy main thread
	// is no longer enough: Chromium 156 keeps reading an EventSource's
	// stream into memory while the page's thread is busy. The throttle
	// is set before the stream opens: it holds for the requests it sees
	// start.
	payload := strings.Repeat("x", 64<<10)
	var ids, data []string
	for range slowEvents / slowBatch {
		batch := make([]event, slowBatch)
		for i := range batch {
			batch[i] = event{Topic: "slow", Data: fmt.Sprintf("%03d %s", len(data)+i, payload)}
		}
		ids = append(ids, publish(t, base+"/publish", batch...)...)
		for _, ev := range batch {
			data = append(data, fmt.Sprintf("%d:%s", len(ev.Data), ev.Data[:40]))
		}
	}
	waitUntil(t, slowWait, "the server drops the stream as slow", func() bool { return slowDrops(t, c) > slowBefore }, func() string {
		resp, err := c.Admin(http.MethodGet, "/sse/hubs/default", "", "")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("the page got %d entries; the hub: %s", len(pg.entries()), body)
	})
	throttle(t, pg.chromium, -1)

	got := pg.waitEvents(src, len(ids))
	checkExactly(t, got, ids, data)
	es := pg.entries()
	if opens := len(only(es, src, "open")); opens != 2 {
		t.Errorf("the source opened %d times, want twice (once more after the drop):\n%s", opens, dump(es))
	}
	// the reconnection sent the id of the last event received before it
	var before string
	for _, en := range es {
		if en.Src == src && en.Kind == "error" {
			break
		}
		if en.Src == src && en.Kind == "event" {
			before = en.ID
		}
	}
	reqs := pg.net.requests("/events")
	if len(reqs) < 2 || reqs[1].Headers["last-event-id"] != before {
		t.Errorf("the reconnection did not send Last-Event-ID %s:\n%s\n%s", before, pg.net, dump(only(es, src, "open")))
	}
	received := 0
	for i, id := range ids {
		if id == before {
			received = i + 1
		}
	}
	t.Logf("the first stream brought %d events (%.1f MiB: what the browser, the kernel and the server held when it was dropped); the reconnection replayed %d",
		received, float64(received)/16, len(ids)-received)
	e.checkProtocol(t, pg.chromium, base)
}

// slowDrops returns how many streams the default hub dropped as slow, from
// the admin API.
func slowDrops(t *testing.T, c *caddyproc.Caddy) uint64 {
	t.Helper()
	resp, err := c.Admin(http.MethodGet, "/sse/hubs/default", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var hub struct {
		Disconnects map[string]uint64 `json:"disconnects"`
	}
	if err := json.Unmarshal(body, &hub); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return hub.Disconnects["slow"]
}

// throttle limits the tab's downloads to bytesPerSecond (-1: no limit),
// as DevTools' network conditions do.
func throttle(t *testing.T, c *chromium, bytesPerSecond float64) {
	t.Helper()
	if err := c.run(network.EmulateNetworkConditions(false, 0, bytesPerSecond, -1)); err != nil {
		t.Fatalf("setting the download throughput to %.0f B/s: %v", bytesPerSecond, err)
	}
}
