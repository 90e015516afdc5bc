package caddysse

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

func TestWithHijack(t *testing.T) {
	in := "sse /a\n\tsse /b {\n\t\tbuffer 5\n\t}\n\tsse_publish /p\n\troute {\n\t\tsse /c\n\t}\n\tsse"
	want := "sse /a {\n\t\thijack\n\t}\n\tsse /b {\n\t\thijack\n\t\tbuffer 5\n\t}\n\tsse_publish /p\n\troute {\n\t\tsse /c {\n\t\thijack\n\t}\n\t}\n\tsse {\n\t\thijack\n\t}"
	if got := withHijack(in); got != want {
		t.Fatalf("withHijack:\n%s\nwant:\n%s", got, want)
	}
}

// TestHijack runs the stream tests again with every stream's connection
// taken over from net/http.
func TestHijack(t *testing.T) {
	hijackAll = true
	defer func() { hijackAll = false }()
	for name, test := range map[string]func(*testing.T){
		"StreamHeadersAndStart":       TestStreamHeadersAndStart,
		"LiveAtHeaders":               TestLiveAtHeaders,
		"EventFormatsArriveExactly":   TestEventFormatsArriveExactly,
		"OneDeliveryForSeveralTopics": TestOneDeliveryForSeveralTopics,
		"Heartbeat":                   TestHeartbeat,
		"HeartbeatOff":                TestHeartbeatOff,
		"ResumeWhilePublishing":       TestResumeWhilePublishing,
		"ResetCases":                  TestResetCases,
		"ReplayLatest":                TestReplayLatest,
		"ClientWithoutEventsResumes":  TestClientWithoutEventsResumesFromItsConnection,
		"EncodeLeavesStreamsAlone":    TestEncodeLeavesStreamsAlone,
		"EncodedStreamStaysWhole":     TestEncodedStreamStaysWhole,
		"StreamOutlivesWriteIdle":     TestStreamOutlivesWriteIdle,
		"SlowSubscriberIsDropped":     TestSlowSubscriberIsDropped,
		"NonReaderIsDropped":          TestNonReaderIsDroppedReaderGetsAll,
		"PausedReaderCatchesUp":       TestPausedReaderCatchesUpFromHistory,
		"LongReplayArrivesAtOnce":     TestLongReplayArrivesAtOnce,
		"NoLeakWithConnectionChurn":   TestNoLeakWithConnectionChurn,
		"MaxSubscribers":              TestMaxSubscribers,
		"CORS":                        TestCORS,
		"TopicTemplates":              TestTopicTemplates,
		"PublishFormats":              TestPublishFormats,
		"DefaultTopic":                TestDefaultTopic,
		"RetryJitterVaries":           TestRetryJitterVaries,
		"ResumeFromQueryParameters":   TestResumeFromQueryParameters,
		"TokenExpiresOpenStream":      TestTokenExpiresOpenStream,
		"MaxStreamsPer":               TestMaxStreamsPer,
		"AdminDisconnect":             TestAdminDisconnect,
	} {
		t.Run(name, test)
	}
}

// rawStream opens a stream over a bare TCP connection, which costs the
// test process no goroutine, and returns once the headers have arrived.
func rawStream(t *testing.T, path, proto string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", testHTTP))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s %s\r\nHost: localhost:%d\r\n\r\n", path, proto, testHTTP)
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the headers: %v", err)
		}
		if line == "\r\n" {
			return c, br
		}
	}
}

// TestHijackFreesGoroutines holds 200 streams open in each mode: a stream
// taken over keeps one goroutine on the server, net/http's stream two.
func TestHijackFreesGoroutines(t *testing.T) {
	checkTakeOverFreesGoroutines(t, "stream", startCaddy, func() io.Closer {
		c, _ := rawStream(t, "/events?topic=g", "HTTP/1.1")
		return c
	})
}

// checkTakeOverFreesGoroutines holds 200 streams open (each opened by
// open) on a Caddy that start serves with a one-second heartbeat, first
// through net/http, then taken over: a stream must cost two goroutines,
// then one. what names the streams in the messages.
func checkTakeOverFreesGoroutines(t *testing.T, what string, start func(t *testing.T, global, site string), open func() io.Closer) {
	t.Helper()
	const n = 200
	perStream := func(site string) float64 {
		start(t, "", site)
		hub := findHub(t, "default")
		streamCount(t, hub, 0)
		runtime.GC()
		before := runtime.NumGoroutine()
		conns := make([]io.Closer, n)
		for i := range conns {
			conns[i] = open()
		}
		streamCount(t, hub, n)
		var during int
		eventually(t, "the goroutines settle", func() bool {
			during = runtime.NumGoroutine()
			time.Sleep(50 * time.Millisecond)
			return runtime.NumGoroutine() == during
		})
		for _, c := range conns {
			c.Close()
		}
		streamCount(t, hub, 0)
		return float64(during-before) / n
	}
	normal := perStream("sse /events {\n\t\theartbeat 1s\n\t}")
	taken := perStream("sse /events {\n\t\theartbeat 1s\n\t\thijack\n\t}")
	t.Logf("goroutines per %s: %.2f through net/http, %.2f taken over", what, normal, taken)
	if normal < 1.9 || taken > 1.1 || taken < 0.9 {
		t.Fatalf("goroutines per %s: %.2f through net/http (want 2), %.2f taken over (want 1)", what, normal, taken)
	}
}

// TestHijackNoticesClosedClient: a client that closes its connection is
// removed within a heartbeat tick (a third of the interval) by the probe,
// long before a heartbeat would fail to be written.
func TestHijackNoticesClosedClient(t *testing.T) {
	startCaddy(t, "", "sse /events {\n\t\theartbeat 3s\n\t\thijack\n\t}")
	hub := findHub(t, "default")
	c, _ := rawStream(t, "/events?topic=closed", "HTTP/1.1")
	eventually(t, "subscribed", func() bool { return hub.Stats().Subscribers == 1 })
	closed := time.Now()
	c.Close()
	eventually(t, "the closed client is removed", func() bool { return hub.Stats().Subscribers == 0 })
	if d := time.Since(closed); d > 1600*time.Millisecond {
		t.Fatalf("removed %v after the client closed; the probe runs every second", d)
	}
	if n := hub.counters.disconnects[endClient].Load(); n == 0 {
		t.Fatal("not counted as a client disconnect")
	}
}

// TestHijackFraming reads streams taken over at the byte level: HTTP/1.1
// gets chunks and a last chunk at the end; HTTP/1.0 gets the events as
// they are, and the connection's end ends the body.
func TestHijackFraming(t *testing.T) {
	startCaddy(t, "", "sse /events {\n\t\thijack\n\t\tmax_age 1s\n\t}\n\tsse_publish /publish")
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		t.Run(proto, func(t *testing.T) {
			c, br := rawStream(t, "/events?topic=framing", proto)
			publishTo(t, "framed", "framing")
			_ = c.SetReadDeadline(time.Now().Add(wait))
			body, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			text := string(body)
			if !strings.Contains(text, "data: framed\n\n") || !strings.Contains(text, "retry: ") {
				t.Fatalf("body %q", text)
			}
			chunked := proto == "HTTP/1.1"
			if chunked != strings.HasSuffix(text, "\r\n0\r\n\r\n") {
				t.Fatalf("%s body ends with %q", proto, text[max(0, len(text)-20):])
			}
			if !chunked && strings.Contains(text, "\r\n") {
				t.Fatalf("HTTP/1.0 body with chunk framing: %q", text)
			}
			// a spec-compliant client reads the same events out of it
			if chunked {
				s := openStream(t, ssetest.NewClient(), "/events?topic=framing&last_event_id=x", nil)
				if f := nextEvent(t, s); f.Type != "reset" {
					t.Fatalf("first event %+v", f)
				}
				if f := nextEvent(t, s); f.Data != "framed" {
					t.Fatalf("replayed %+v", f)
				}
			}
		})
	}
}
