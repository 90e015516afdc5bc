package caddysse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

const basicSite = `
	sse /events
	sse_publish /publish
`

func TestStreamHeadersAndStart(t *testing.T) {
	startCaddy(t, "", basicSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=headers", nil)
	h := s.Resp.Header
	if ct := h.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	cc := h.Get("Cache-Control")
	if !strings.Contains(cc, "no-cache") || !strings.Contains(cc, "no-transform") {
		t.Errorf("Cache-Control %q", cc)
	}
	if h.Get("X-Accel-Buffering") != "no" {
		t.Errorf("X-Accel-Buffering %q", h.Get("X-Accel-Buffering"))
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", h.Get("X-Content-Type-Options"))
	}
	if s.Resp.ContentLength != -1 || h.Get("Content-Length") != "" {
		t.Errorf("Content-Length %q", h.Get("Content-Length"))
	}
	// the stream starts with a retry hint of 3s plus 0-50%
	f, err := s.Next(wait)
	if err != nil || f.Kind != ssetest.KindRetry {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	if f.Retry < 3000 || f.Retry > 4500 {
		t.Errorf("retry %d not in [3000, 4500]", f.Retry)
	}
	// then the position of the hub, so that a reconnection resumes from it
	f, err = s.Next(wait)
	if err != nil || f.Kind != ssetest.KindID || f.LastID == "" {
		t.Fatalf("second frame %+v, %v", f, err)
	}
}

func TestRetryJitterVaries(t *testing.T) {
	startCaddy(t, "", `sse /events {
		retry 10s
	}`)
	client := ssetest.NewClient()
	seen := map[int]bool{}
	for range 20 {
		s := openStream(t, client, "/events?topic=jitter", nil)
		f, err := s.Next(wait)
		if err != nil || f.Kind != ssetest.KindRetry {
			t.Fatalf("first frame %+v, %v", f, err)
		}
		if f.Retry < 10000 || f.Retry > 15000 {
			t.Fatalf("retry %d not in [10000, 15000]", f.Retry)
		}
		seen[f.Retry] = true
		s.Close()
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct retry values in 20 streams: no jitter", len(seen))
	}
}

// TestLiveAtHeaders publishes the moment the response headers arrive, as
// browser code does in onopen: the event must always arrive. The hub
// harness does it 300 times (TestHubLiveAtHeaders); here, over Caddy's
// connections and each protocol, 50.
func TestLiveAtHeaders(t *testing.T) {
	startCaddy(t, "", basicSite)
	client := ssetest.NewClient()
	for i := range 50 {
		topic := fmt.Sprint("live-", i)
		s := openStream(t, client, "/events?topic="+topic, nil)
		want := fmt.Sprint("event-", i)
		publishTo(t, want, topic)
		f := nextEvent(t, s)
		if f.Data != want {
			t.Fatalf("iteration %d: got %q, want %q", i, f.Data, want)
		}
		s.Close()
	}
}

func TestEventFormatsArriveExactly(t *testing.T) {
	startCaddy(t, "", basicSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=formats", nil)
	cases := []struct{ typ, data, want string }{
		{"", "plain", "plain"},
		{"custom", "typed", "typed"},
		{"", "multi\nline\r\nand\rcr", "multi\nline\nand\ncr"},
		{"", "  leading spaces", "  leading spaces"},
		{"", "", ""},
		{"", "trailing\n", "trailing\n"},
		{"", "non-ASCII: ünïcödé ✓ 😀", "non-ASCII: ünïcödé ✓ 😀"},
		{"", "{placeholder} {http.request.uri}", "{placeholder} {http.request.uri}"},
	}
	for _, c := range cases {
		r := publishForm(t, "/publish", map[string][]string{"topic": {"formats"}, "event": {c.typ}, "data": {c.data}})
		f := nextEvent(t, s)
		wantType := c.typ
		if wantType == "" {
			wantType = "message"
		}
		if f.Data != c.want || f.Type != wantType || f.LastID != r.ID {
			t.Errorf("published %q/%q: got type %q data %q id %q, want %q %q %q",
				c.typ, c.data, f.Type, f.Data, f.LastID, wantType, c.want, r.ID)
		}
	}
}

func TestOneDeliveryForSeveralTopics(t *testing.T) {
	startCaddy(t, "", basicSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=d1&topic=d2&topic=d3", nil)
	r := publishTo(t, "once", "d1", "d2", "d3")
	if r.Subscribers != 1 {
		t.Errorf("subscribers %d, want 1", r.Subscribers)
	}
	publishTo(t, "marker", "d2")
	if f := nextEvent(t, s); f.Data != "once" {
		t.Fatalf("got %q", f.Data)
	}
	if f := nextEvent(t, s); f.Data != "marker" {
		t.Fatalf("the event came twice: got %q, want the marker", f.Data)
	}
}

func TestDefaultTopic(t *testing.T) {
	startCaddy(t, "", basicSite)
	s := openStream(t, ssetest.NewClient(), "/events", nil)
	r := post(t, "/publish", "text/plain", "to the default topic")
	if r.Status != http.StatusOK || len(r.Result.Topics) != 1 || r.Result.Topics[0] != "default" {
		t.Fatalf("publish: %d %s", r.Status, r.Body)
	}
	if f := nextEvent(t, s); f.Data != "to the default topic" {
		t.Fatalf("got %q", f.Data)
	}
}

// TestHeartbeat: a quiet stream gets a comment at least every heartbeat
// interval (give or take the scheduling of a busy machine), an event in
// between included; the test ends at the fourth heartbeat, which must
// come within five intervals.
func TestHeartbeat(t *testing.T) {
	const interval = 400 * time.Millisecond
	startCaddy(t, "", `sse /events {
		heartbeat 400ms
	}
	sse_publish /publish`)
	s := openStream(t, ssetest.NewClient(), "/events?topic=hb", nil)
	last := time.Now()
	var maxGap time.Duration
	comments := 0
	end := time.Now().Add(5 * interval)
	for comments < 4 && time.Now().Before(end) {
		f, err := s.Next(2 * interval)
		if err != nil {
			t.Fatalf("after %d heartbeats: %v", comments, err)
		}
		if gap := f.At.Sub(last); gap > maxGap {
			maxGap = gap
		}
		last = f.At
		if f.Kind == ssetest.KindComment {
			comments++
			if comments == 2 {
				publishTo(t, "an event in between", "hb")
			}
		}
	}
	// a heartbeat is due interval after the last write; what the client
	// sees adds the scheduling of a busy machine (-race, other tests):
	// half an interval of slack, far less than a missed heartbeat's
	if maxGap > interval*3/2 {
		t.Errorf("the stream was silent for %v, more than the %v heartbeat (and its slack)", maxGap, interval)
	}
	if comments < 4 {
		t.Errorf("%d heartbeats in %v", comments, 5*interval)
	}
}

// TestHeartbeatOff: with heartbeat off, a quiet stream gets nothing
// after its start, for ten of its sweeper's ticks (write_timeout/3).
func TestHeartbeatOff(t *testing.T) {
	startCaddy(t, "", `sse /events {
		heartbeat off
		write_timeout 300ms
	}`)
	s := openStream(t, ssetest.NewClient(), "/events?topic=nohb", nil)
	for range 2 { // retry and position
		if _, err := s.Next(wait); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := s.Next(time.Second); err != ssetest.ErrTimeout {
		t.Fatalf("with heartbeat off, got %+v, %v", f, err)
	}
}

// startWithTimeouts serves quiet streams (no heartbeat) and publishing,
// on a server with the given timeouts { ... } lines.
func startWithTimeouts(t *testing.T, timeouts ...string) {
	t.Helper()
	startCaddy(t, "servers {\n\t\ttimeouts {\n\t\t\t"+strings.Join(timeouts, "\n\t\t\t")+"\n\t\t}\n\t}",
		"sse /events {\n\t\theartbeat off\n\t}\n\tsse_publish /publish")
}

// TestStreamOutlivesWriteIdle: Caddy's write_idle timeout arms the
// connection's write deadline before each write through its wrappers and
// leaves it armed (except over HTTP/2); a stream that writes past the
// wrappers once started must still be written to after that deadline,
// here 300 ms after its start, with no heartbeat in between.
func TestStreamOutlivesWriteIdle(t *testing.T) {
	startWithTimeouts(t, "write_idle 300ms")
	hub := findHub(t, "default")
	s := openStream(t, ssetest.NewClient(), "/events?topic=idle", nil)
	defer s.Close()
	// wait past the deadline armed by the start's last write: the sweeper
	// ticks every write_timeout/3 (10 s), so a clock is the only event
	time.Sleep(500 * time.Millisecond)
	for i := range 3 {
		want := publishTo(t, fmt.Sprintf("after the idle deadline %d", i), "idle")
		f, err := s.NextEvent(2 * time.Second)
		if err != nil || f.LastID != want.ID {
			t.Fatalf("event %d: got %+v, %v; want %s (subscribers now %d)", i, f, err, want.ID, hub.Stats().Subscribers)
		}
	}
}

// TestWriteTimeoutStillCapsStreams: the server's write timeout stays a
// hard cap on a stream's life once the stream writes past Caddy's
// wrappers: an event published before it arrives, the stream is cut
// after it.
func TestWriteTimeoutStillCapsStreams(t *testing.T) {
	startWithTimeouts(t, "write 1s")
	s := openStream(t, ssetest.NewClient(), "/events?topic=capped", nil)
	defer s.Close()
	opened := time.Now()
	want := publishTo(t, "before the cap", "capped")
	if f := nextEvent(t, s); f.LastID != want.ID {
		t.Fatalf("got %+v, want %s", f, want.ID)
	}
	time.Sleep(time.Until(opened.Add(1200 * time.Millisecond)))
	publishTo(t, "after the cap", "capped")
	if f, err := s.NextEvent(3 * time.Second); err == nil {
		t.Fatalf("the stream outlived the server's write timeout: got %+v", f)
	}
}

// TestStreamOutlivesReadTimeouts: the server's read timeouts bound
// reading the request, not the stream that answers it (docs/operations.md, Caddy's
// timeouts): a stream is still written to after they have passed.
func TestStreamOutlivesReadTimeouts(t *testing.T) {
	// 1s: a TLS handshake on a busy machine took more than 300 ms (the
	// server's read_header timeout cut it: "connection reset by peer")
	startWithTimeouts(t, "read_body 1s", "read_header 1s")
	s := openStream(t, ssetest.NewClient(), "/events?topic=read", nil)
	defer s.Close()
	time.Sleep(1200 * time.Millisecond) // past both timeouts: only time can
	want := publishTo(t, "after the read timeouts", "read")
	if f, err := s.NextEvent(2 * time.Second); err != nil || f.LastID != want.ID {
		t.Fatalf("got %+v, %v; want %s", f, err, want.ID)
	}
}
