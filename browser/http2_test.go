//go:build unix

package browser

import (
	"fmt"
	"testing"
)

// streams is how many EventSources the HTTP/2 test opens on one page:
// more than the six connections per origin of HTTP/1.1.
const streams = 10

// TestHTTP2ManyStreams opens ten EventSources on one page. Over HTTP/2
// (TLS with Caddy's internal CA) they share one connection and all
// receive events. Over plain HTTP/1.1 only six are open at a time, the
// browser's limit of connections per origin; the others wait until one
// closes.
func TestHTTP2ManyStreams(t *testing.T) {
	t.Parallel() // a Caddy, ports and a Chromium of its own
	p := testPorts(9)
	plain := origin(p.http)
	secure := fmt.Sprintf("https://localhost:%d", p.https)
	routes := `
	sse /events
	sse_publish /publish`
	startCaddy(t, p, caddyfile(p, `local_certs
	skip_install_trust`,
		site(t, secure, "tls internal"+routes),
		site(t, plain, routes)))
	br := startChromium(t, "ignore-certificate-errors")

	t.Run("HTTP/2", func(t *testing.T) {
		manyStreams(t, br.in(t).openHarness(secure), secure, "h2")
	})

	t.Run("HTTP/1.1", func(t *testing.T) {
		pg := br.in(t).openHarness(plain)
		for range streams {
			pg.open("/events?topic=many", sourceOptions{})
		}
		const limit = 6
		es := pg.waitFor(fmt.Sprintf("%d sources are open", limit), func(es []entry) bool {
			return len(only(es, -1, "open")) >= limit
		})
		// The sources that opened get events; the others are still
		// waiting for a connection.
		publishData(t, plain+"/publish", "many", "to the open ones")
		es = pg.waitFor(fmt.Sprintf("%d sources got the event", limit), func(es []entry) bool {
			return len(only(es, -1, "event")) >= limit
		})
		if n := len(only(es, -1, "open")); n != limit {
			t.Fatalf("%d sources open over HTTP/1.1, want %d:\n%s", n, limit, dump(es))
		}
		var waiting []int
		for src, state := range pg.states() {
			switch state {
			case open:
				if len(only(es, src, "event")) != 1 {
					t.Fatalf("open source %d did not get the event:\n%s", src, dump(es))
				}
			case connecting:
				waiting = append(waiting, src)
			}
		}
		if len(waiting) != streams-limit {
			t.Fatalf("%d sources waiting, want %d: %v", len(waiting), streams-limit, pg.states())
		}
		// Closing open sources frees connections for the waiting ones.
		closedOnes := 0
		for src, state := range pg.states() {
			if state == open && closedOnes < len(waiting) {
				pg.close(src)
				closedOnes++
			}
		}
		for _, src := range waiting {
			pg.waitOpen(src, 1)
		}
		conns := make(map[float64]bool)
		for _, r := range pg.net.requests(plain + "/events") {
			if r.Protocol != "http/1.1" {
				t.Fatalf("a stream over %q, want http/1.1:\n%s", r.Protocol, pg.net)
			}
			conns[r.Conn] = true
		}
		if len(conns) != streams {
			t.Fatalf("%d connections for %d streams over HTTP/1.1:\n%s", len(conns), streams, pg.net)
		}
	})
}

// manyStreams opens ten EventSources on the page, at base, and checks that
// all of them open and receive an event, over one connection of protocol
// alpn.
func manyStreams(t *testing.T, pg *page, base, alpn string) {
	t.Helper()
	for range streams {
		pg.open("/events?topic=many", sourceOptions{})
	}
	for src := range streams {
		pg.waitOpen(src, 1)
	}
	id := publishData(t, base+"/publish", "many", "to all")
	for src := range streams {
		if got := pg.waitEvents(src, 1); got[0].ID != id {
			t.Fatalf("source %d got %v, want %s", src, got[0], id)
		}
	}
	reqs := pg.net.requests(base + "/events")
	if len(reqs) != streams {
		t.Fatalf("%d requests, want %d:\n%s", len(reqs), streams, pg.net)
	}
	for _, r := range reqs {
		if r.Protocol != alpn || r.Conn != reqs[0].Conn {
			t.Fatalf("want every stream over %s, on one connection:\n%s", alpn, pg.net)
		}
	}
}
