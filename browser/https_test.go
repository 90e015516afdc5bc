//go:build unix

package browser

import (
	"testing"
)

// The test numbers of a secure run's tests (their ports are those of the
// number plus the run's shift); issuing is the Caddy that has the
// certificate issued first.
const (
	secureTests = 15
	issuing     = 19
	shiftHTTP2  = 20
	shiftHTTP3  = 40
)

// TestOverHTTPS runs the browser's behaviours again over HTTPS with
// Caddy's internal CA on 127.0.0.1, with HTTP/2 and, side by side, HTTP/3 (Chromium
// forced onto QUIC for the tests' origins, the certificate accepted by
// the hash of its public key): one Chromium per protocol, a tab per test,
// each test checking that its requests used the protocol. Each run
// proves what the protocol could change:
//
//   - open before any event, heartbeats: the headers and each heartbeat
//     are flushed through the protocol's framing and Chromium's stack;
//   - event types and data: events split over the protocol's frames
//     (a 64 KiB one among them) arrive exactly;
//   - max_age, reload, restart (SIGTERM; HTTP/2 only): a stream the server ends
//     (END_STREAM, GOAWAY, CONNECTION_CLOSE, a server gone) makes the
//     browser reconnect on the protocol and resume with Last-Event-ID;
//   - over capacity: the refusal, a stream that ends, is retried later;
//   - a slow page: flow-control windows fill, the stream is dropped as
//     slow, and the browser resumes without loss;
//   - ten streams on one connection (HTTP/3; HTTP/2 in TestHTTP2ManyStreams);
//   - the demo.
//
// Not repeated: cross-origin (what the CORS checks decide does not depend
// on the protocol) and hijack (it applies to HTTP/1.x only; the Go tests
// check that HTTP/2 and HTTP/3 streams are served as usual with it).
func TestOverHTTPS(t *testing.T) {
	t.Parallel() // ports and Chromiums of its own
	needChromium(t)
	storage := t.TempDir()
	spki := issueCertificate(t, storage, testPorts(issuing))
	runs := []*env{
		{name: "h2", secure: true, alpn: "h2", proto: "HTTP/2.0", storage: storage, shift: shiftHTTP2},
		// Caddy's HTTP/3 server, when it stops, waits for its clients to
		// close their QUIC connections, which Chromium does after 30 s
		// idle (every stream ended at once): with Caddy's default
		// unlimited grace period, a SIGTERM takes that long. docs/https.md
		// advises a grace_period with HTTP/3, as here.
		{name: "h3", secure: true, alpn: "h3", proto: "HTTP/3.0", storage: storage, shift: shiftHTTP3, global: "grace_period 2s"},
	}
	for _, e := range runs {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel() // a Chromium and ports of its own
			flags := []string{"ignore-certificate-errors-spki-list=" + spki}
			if e.name == "h3" {
				flags = append(flags, "enable-quic", "origin-to-force-quic-on="+e.quicOrigins(secureTests))
			}
			e.br = startChromium(t, flags...)
			// Each test has a Caddy, ports and a tab of its own, and mostly
			// waits: they run side by side, but for the heartbeats, whose
			// gaps are measured (they run first, alone in this run).
			t.Run("open before any event", func(t *testing.T) { t.Parallel(); openBeforeAnyEvent(t, e, 0) })
			t.Run("event types and data", func(t *testing.T) { t.Parallel(); eventTypesAndData(t, e, 1, "sse /events") })
			t.Run("reconnect after max_age", func(t *testing.T) { t.Parallel(); reconnectAfterMaxAge(t, e, 2, "") })
			t.Run("reconnect after a reload", func(t *testing.T) { t.Parallel(); reconnectAfterReload(t, e, 3) })
			if e.name == "h2" {
				// The reset is the server's answer to an id of another
				// epoch, whatever the protocol. Over HTTP/3 the browser
				// takes 20-30 s to come back after a restart (its QUIC
				// handshakes to the stopping server are dropped, and it
				// retries at growing intervals), which this would only
				// wait for.
				t.Run("reset after a restart", func(t *testing.T) { t.Parallel(); resetAfterRestart(t, e, 4) })
			}
			t.Run("over capacity", func(t *testing.T) { t.Parallel(); overCapacity(t, e, 5) })
			t.Run("heartbeats", func(t *testing.T) { heartbeats(t, e, 13) })
			t.Run("slow page", func(t *testing.T) { t.Parallel(); slowPage(t, e, 14) })
			if e.name == "h3" {
				t.Run("ten streams on one connection", func(t *testing.T) {
					t.Parallel()
					p := e.ports(9)
					base := e.base(p)
					startCaddy(t, p, e.caddyfile(p, "", e.site(t, p, "sse /events\n\tsse_publish /publish")))
					pg := e.browser(t).openHarness(base)
					manyStreams(t, pg, base, e.alpn)
					e.checkProtocol(t, pg.chromium, base)
				})
			}
			t.Run("demo", func(t *testing.T) { t.Parallel(); demoPage(t, e, 10) })
		})
	}
}
