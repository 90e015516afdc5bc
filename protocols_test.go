package caddysse

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// The HTTPS site of the protocol tests listens on the https_port that
// startCaddy names: TCP for HTTP/1.1 and HTTP/2, UDP for HTTP/3.
var (
	testHTTPS      = testHTTP + 363
	testSecureBase = fmt.Sprintf("https://localhost:%d", testHTTPS)
)

// protocol is a way of reaching the HTTPS site.
type protocol struct {
	name  string // in test names
	proto string // http.Response.Proto of its answers
}

var (
	protoH1TLS = protocol{name: "h1tls", proto: "HTTP/1.1"}
	protoH2    = protocol{name: "h2", proto: "HTTP/2.0"}
	protoH3    = protocol{name: "h3", proto: "HTTP/3.0"}
	secure     = []protocol{protoH1TLS, protoH2, protoH3}
)

// testStorage is where the in-process Caddy keeps its certificates and
// its local CA: one directory for the package's tests, so that the CA is
// made once, not per test; TestMain removes it at the end.
func testStorage() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("caddy-sse-test-storage-%d", testHTTPS))
}

// secureConfig is startCaddy's config with the site served twice: over
// plain HTTP on testHTTP (the tests publish there) and over HTTPS with
// Caddy's internal CA on testHTTPS, with Caddy's default protocols (h1,
// h2, h3).
func secureConfig(global, site string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	local_certs
	skip_install_trust
	storage file_system %s
	%s
}
http://localhost:%d {
	%s
}
https://localhost:%d {
	tls internal
	%s
}
`, testAdmin, testHTTP, testHTTPS, testStorage(), global, testHTTP, site, testHTTPS, site)
}

// testRoots holds the root of Caddy's local CA once startSecure has run:
// the clients of these tests verify the site's certificate with it.
var testRoots atomic.Pointer[x509.CertPool]

// startSecure loads secureConfig into the test process's Caddy and
// returns once the HTTPS site completes a TLS handshake verified with
// the local CA's root.
func startSecure(t *testing.T, global, site string) {
	t.Helper()
	caddytest.NewTester(t).InitServer(secureConfig(global, site), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	http.DefaultClient.CloseIdleConnections()
	rootFile := filepath.Join(testStorage(), "pki", "authorities", "local", "root.crt")
	var lastErr error
	eventually(t, "the HTTPS site answers a verified handshake", func() bool {
		lastErr = handshake(rootFile)
		return lastErr == nil
	})
}

// handshake loads the CA root from rootFile and completes a TLS handshake
// with the HTTPS site, verified with it.
func handshake(rootFile string) error {
	pem, err := os.ReadFile(rootFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", rootFile)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", testHTTPS), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		return err
	}
	testRoots.Store(pool)
	return conn.Close()
}

// clientOptions shape a protocol client.
type clientOptions struct {
	// small windows and buffers: a stream that is not read stalls the
	// server's writes after a few KiB, not after megabytes
	small bool
	// flow-control windows (0: the client's defaults; HTTP/2: Go's 4 MiB
	// a stream, 1 GiB a connection; HTTP/3: quic-go's, growing up to 6
	// and 15 MiB)
	streamWindow, connWindow int
}

// newProtocolClient returns a client that speaks p to the HTTPS site,
// verifying its certificate, with no overall timeout and no transparent
// decompression; it is closed when the test ends.
func newProtocolClient(t *testing.T, p protocol, o clientOptions) *http.Client {
	t.Helper()
	roots := testRoots.Load()
	if roots == nil {
		t.Fatal("no CA root: start the site with startSecure first")
	}
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if p == protoH3 {
		qc := &quic.Config{}
		if o.small {
			o.streamWindow, o.connWindow = 16<<10, 64<<10
		}
		if o.streamWindow > 0 {
			qc.InitialStreamReceiveWindow, qc.MaxStreamReceiveWindow = uint64(o.streamWindow), uint64(o.streamWindow)
		}
		if o.connWindow > 0 {
			qc.InitialConnectionReceiveWindow, qc.MaxConnectionReceiveWindow = uint64(o.connWindow), uint64(o.connWindow)
		}
		tr := &http3.Transport{TLSClientConfig: tlsConf, QUICConfig: qc, DisableCompression: true}
		t.Cleanup(func() { _ = tr.Close() })
		return &http.Client{Transport: tr}
	}
	tr := &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     5 * time.Second,
		Protocols:           new(http.Protocols),
	}
	tr.Protocols.SetHTTP1(p == protoH1TLS)
	tr.Protocols.SetHTTP2(p == protoH2)
	tlsConf.NextProtos = []string{"http/1.1"}
	if p == protoH2 {
		tlsConf.NextProtos = []string{"h2"}
	}
	d := &net.Dialer{Timeout: wait}
	if o.small {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}
		tr.DisableKeepAlives = p == protoH1TLS
		o.streamWindow, o.connWindow = 16<<10, 64<<10
	}
	conns := new(connList)
	dialed.Store(tr, conns)
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		td := &tls.Dialer{NetDialer: d, Config: tlsConf}
		c, err := td.DialContext(ctx, network, addr)
		if err == nil {
			conns.add(c)
		}
		return c, err
	}
	if o.streamWindow > 0 || o.connWindow > 0 {
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: o.streamWindow, MaxReceiveBufferPerConnection: o.connWindow}
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		dialed.Delete(tr)
	})
	return &http.Client{Transport: tr}
}

// dialed holds the connections each net/http protocol client dialled, by
// its transport, so that a test can close them under their streams.
var dialed sync.Map // *http.Transport -> *connList

// connList is the connections a client dialled.
type connList struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connList) add(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns = append(l.conns, c)
}

// closeAll closes every connection and returns how many there were.
func (l *connList) closeAll() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	n := len(l.conns)
	l.conns = nil
	return n
}

// openSecure subscribes to a path of the HTTPS site with client, which
// must speak p, and checks that the stream started over p.
func openSecure(t *testing.T, client *http.Client, p protocol, path string, header http.Header) *ssetest.Stream {
	t.Helper()
	s := ssetest.OpenT(t, client, testSecureBase+path, header)
	if s.Resp.Proto != p.proto {
		t.Fatalf("GET %s answered over %s, want %s", path, s.Resp.Proto, p.proto)
	}
	return s
}

// protocolMode runs the stream tests over one protocol: startCaddy serves
// their site over HTTPS too, and openStream subscribes there, with a
// client of that protocol for each client the test made.
type protocolMode struct {
	p       protocol
	hijack  bool // the sse handlers take their HTTP/1.1 connections over
	mu      sync.Mutex
	clients map[*http.Client]*http.Client
	streams atomic.Int64 // streams opened over p
}

func (m *protocolMode) start(t *testing.T, global, site string) {
	t.Helper()
	if m.hijack {
		site = withHijack(site)
	}
	startSecure(t, global, site)
}

func (m *protocolMode) open(t *testing.T, client *http.Client, path string, header http.Header) *ssetest.Stream {
	t.Helper()
	var c *http.Client
	if isSmallBufferClient(client) {
		// a connection per stream, as the small-buffer client has: over
		// HTTP/3 even response headers wait for the connection's window,
		// which the first stalled streams would use up
		c = newProtocolClient(t, m.p, clientOptions{small: true})
	} else {
		m.mu.Lock()
		if c = m.clients[client]; c == nil {
			c = newProtocolClient(t, m.p, clientOptions{})
			m.clients[client] = c
		}
		m.mu.Unlock()
	}
	s := openSecure(t, c, m.p, path, header)
	m.streams.Add(1)
	return s
}

// isSmallBufferClient tells ssetest.NewSmallBufferClient's clients, which
// dial with a socket option of their own and keep no connection alive.
func isSmallBufferClient(c *http.Client) bool {
	tr, ok := c.Transport.(*http.Transport)
	return ok && tr.DialContext != nil && tr.DisableKeepAlives
}

// streamSuite is the stream tests whose outcome the protocol can change
// (flushing, framing, heartbeats, resumption across reconnections, the
// end of a stream, refusals that close), among those that subscribe only
// through openStream and so run over any protocol. Left out: what the
// server decides alone whatever carries the stream (topic routing,
// replay counts, retry jitter, heartbeats off), the CORS test (it
// compares origins with the plain HTTP site's), the churn test (it dials
// the site itself), TestSlowSubscriberIsDropped (TestProtocolsStalledWriteEnds and
// TestSlowStreamSharesConnection stall writes over each protocol; the
// suite drops a subscriber whose events left the history and the window).
var streamSuite = []struct {
	name string
	test func(*testing.T)
}{
	{"StreamHeadersAndStart", TestStreamHeadersAndStart},
	{"LiveAtHeaders", TestLiveAtHeaders},
	{"EventFormatsArriveExactly", TestEventFormatsArriveExactly},
	{"OneDeliveryForSeveralTopics", TestOneDeliveryForSeveralTopics},
	{"Heartbeat", TestHeartbeat},
	{"ResumeWhilePublishing", TestResumeWhilePublishing},
	{"ResetCases", TestResetCases},
	{"ClientWithoutEventsResumes", TestClientWithoutEventsResumesFromItsConnection},
	{"EncodeLeavesStreamsAlone", TestEncodeLeavesStreamsAlone},
	{"NonReaderIsDroppedReaderGetsAll", TestNonReaderIsDroppedReaderGetsAll},
	{"PausedReaderCatchesUpFromHistory", TestPausedReaderCatchesUpFromHistory},
	{"LongReplayArrivesAtOnce", TestLongReplayArrivesAtOnce},
	{"InterruptEndsTheStreamsOfItsTopics", TestInterruptEndsTheStreamsOfItsTopics},
	{"MaxSubscribers", TestMaxSubscribers},
	{"StreamOutlivesWriteIdle", TestStreamOutlivesWriteIdle},
	{"WriteTimeoutStillCapsStreams", TestWriteTimeoutStillCapsStreams},
	{"StreamOutlivesReadTimeouts", TestStreamOutlivesReadTimeouts},
}

// notTakenOver names the stream tests that do not hold for streams taken
// over: the server's timeouts no longer apply to those (docs/hijack.md).
var notTakenOver = map[string]bool{"WriteTimeoutStillCapsStreams": true}

// TestProtocolsStreamSuite* run the stream tests again over HTTPS:
// HTTP/1.1 over TLS (served as usual, and taken over with hijack),
// HTTP/2 and HTTP/3, each stream checked to have used that protocol. One
// test per protocol, so that the package's processes share them out
// (runShards).
func TestProtocolsStreamSuiteH1TLS(t *testing.T) { runStreamSuite(t, protoH1TLS, false) }

func TestProtocolsStreamSuiteH1TLSHijack(t *testing.T) { runStreamSuite(t, protoH1TLS, true) }

func TestProtocolsStreamSuiteH2(t *testing.T) { runStreamSuite(t, protoH2, false) }

func TestProtocolsStreamSuiteH3(t *testing.T) { runStreamSuite(t, protoH3, false) }

// runStreamSuite runs the stream tests over protocol p, on connections
// taken over (hijack) or not.
func runStreamSuite(t *testing.T, p protocol, hijack bool) {
	m := &protocolMode{p: p, hijack: hijack, clients: make(map[*http.Client]*http.Client)}
	startVia, openVia = m.start, m.open
	defer func() { startVia, openVia = nil, nil }()
	for _, c := range streamSuite {
		if hijack && notTakenOver[c.name] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			before := m.streams.Load()
			c.test(t)
			if m.streams.Load() == before {
				t.Errorf("no stream of this test went over %s", p.name)
			}
		})
	}
}

// TestProtocolsOpenAtOnce checks, over each protocol, that the headers
// and the stream's first block (the retry hint and the hub's position)
// arrive at once, long before the first heartbeat: they are flushed.
func TestProtocolsOpenAtOnce(t *testing.T) {
	startSecure(t, "", `sse /events {
		heartbeat 1m
	}
	sse_publish /publish`)
	for _, p := range secure {
		t.Run(p.name, func(t *testing.T) {
			client := newProtocolClient(t, p, clientOptions{})
			for i := range 3 {
				start := time.Now()
				s := openSecure(t, client, p, fmt.Sprintf("/events?topic=once-%d", i), nil)
				retry, err := s.Next(2 * time.Second)
				if err != nil || retry.Kind != ssetest.KindRetry {
					t.Fatalf("first frame %+v, %v", retry, err)
				}
				pos, err := s.Next(2 * time.Second)
				if err != nil || pos.Kind != ssetest.KindID || pos.LastID == "" {
					t.Fatalf("second frame %+v, %v", pos, err)
				}
				t.Logf("stream %d: headers and first block in %v", i, pos.At.Sub(start).Round(time.Microsecond))
				want := publishTo(t, "after the start", fmt.Sprintf("once-%d", i))
				if f := nextEvent(t, s); f.LastID != want.ID || f.Data != "after the start" {
					t.Fatalf("got %+v, want the event %s", f, want.ID)
				}
				s.Close()
			}
		})
	}
}

// streamCount waits until the hub has n subscribers.
func streamCount(t *testing.T, hub *Hub, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("the hub has %d subscribers", n), func() bool { return hub.Stats().Subscribers == n })
}

// goneWithin waits until the hub has n subscribers, failing if that took
// longer than limit: the streams of clients that left are removed
// promptly, not at the next heartbeat (the site's are a minute apart).
func goneWithin(t *testing.T, hub *Hub, n int, limit time.Duration, since time.Time) {
	t.Helper()
	streamCount(t, hub, n)
	if d := time.Since(since); d > limit {
		t.Fatalf("the stream left the hub %v after its client did, want within %v", d, limit)
	} else {
		t.Logf("the stream left the hub %v after its client did", d.Round(time.Millisecond))
	}
}

// TestProtocolsClientLeaves ends streams from the client's side in each
// protocol's own way, and checks that the server removes them at once
// (heartbeats are a minute apart, so no failed write can be what
// noticed), counting a client disconnect, while the client's other
// streams on the same connection carry on.
func TestProtocolsClientLeaves(t *testing.T) {
	startSecure(t, "", `sse /events {
		heartbeat 1m
	}
	sse_publish /publish`)
	hub := findHub(t, "default")
	const prompt = time.Second

	// one stream of two on a connection: HTTP/2 sends RST_STREAM (CANCEL),
	// HTTP/3 cancels the stream's both directions (STOP_SENDING and
	// RESET_STREAM); over HTTP/1.1 the connection is closed
	for _, p := range secure {
		t.Run(p.name+" one stream", func(t *testing.T) {
			streamCount(t, hub, 0)
			client := newProtocolClient(t, p, clientOptions{})
			stays := openSecure(t, client, p, "/events?topic=stay", nil)
			leaves := openSecure(t, client, p, "/events?topic=leave", nil)
			streamCount(t, hub, 2)
			clientBefore := hub.counters.disconnects[endClient].Load()
			left := time.Now()
			leaves.Close()
			goneWithin(t, hub, 1, prompt, left)
			if n := hub.counters.disconnects[endClient].Load() - clientBefore; n != 1 {
				t.Fatalf("%d client disconnects counted, want 1", n)
			}
			want := publishTo(t, "still here", "stay")
			if f := nextEvent(t, stays); f.LastID != want.ID {
				t.Fatalf("the remaining stream got %+v, want %s", f, want.ID)
			}
		})
	}

	// the whole connection: HTTP/2 and HTTP/1.1 close the TCP connection
	// (after a TLS close_notify), HTTP/3 sends CONNECTION_CLOSE
	for _, p := range secure {
		t.Run(p.name+" connection", func(t *testing.T) {
			streamCount(t, hub, 0)
			client := newProtocolClient(t, p, clientOptions{})
			for i := range 3 {
				openSecure(t, client, p, fmt.Sprintf("/events?topic=conn-%d", i), nil)
			}
			streamCount(t, hub, 3)
			left := time.Now()
			closeConnections(t, client)
			goneWithin(t, hub, 0, prompt, left)
		})
	}
}

// closeConnections closes every connection of a protocol client, open
// streams included.
func closeConnections(t *testing.T, c *http.Client) {
	t.Helper()
	switch tr := c.Transport.(type) {
	case *http3.Transport:
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	case *http.Transport:
		// CloseIdleConnections leaves connections with open streams
		// alone: close those the transport dialled
		l, ok := dialed.Load(tr)
		if !ok || l.(*connList).closeAll() == 0 {
			t.Fatal("the client has no connection to close")
		}
	default:
		t.Fatalf("not a protocol client: %T", tr)
	}
}

// TestSlowStreamSharesConnection puts a stream that never reads and one
// that reads everything on one HTTP/2 connection (and on one QUIC
// connection; over HTTP/1.1 each has its own), both following one topic of 24 KiB events published every
// 2 ms. The slow stream fills its flow-control window, its writes stall,
// and it is dropped as slow after its write_timeout (300 ms). Its handler must then end without the
// client reading anything (the server resets the stream), and the other
// stream must receive every event, in order.
//
// Each protocol runs with its client's default windows and with a
// connection window smaller than a stream's. Clients give a connection's
// window back as their application reads, so the bytes a stalled stream
// was sent but never read hold part of the connection's window. With Go's
// windows (4 MiB a stream, 1 GiB a connection) and quic-go's (up to 6 and
// 15 MiB) a stalled stream cannot hold up the others, and the healthy
// stream must never be silent for long. With a connection window smaller
// than a stream's, the stalled stream takes the whole connection's window
// and the healthy one gets nothing more until the server has reset the
// stalled stream and the client has discarded its unread bytes (which
// the test does once the server has ended the stream). Browsers are in
// between: Chromium allows 6 MiB a stream and 15 MiB a connection, so
// three stalled streams of one page stall all the others of its origin.
func TestSlowStreamSharesConnection(t *testing.T) {
	startSecure(t, `sse {
		hub shared {
			history 100000
		}
	}`, `sse /events {
		hub shared
		write_timeout 300ms
		heartbeat 1m
	}
	sse /fast {
		hub shared
		heartbeat 1m
	}
	sse /taken {
		hub shared
		write_timeout 300ms
		heartbeat 1m
		hijack
	}
	sse_publish /publish {
		hub shared
	}`)
	hub := findHub(t, "shared")
	for _, c := range []struct {
		name    string
		p       protocol
		o       clientOptions
		starved bool // the healthy stream waits for the slow one's end
		path    string
	}{
		{"h1tls, a connection each", protoH1TLS, clientOptions{}, false, "/events"},
		{"h1tls taken over, a connection each", protoH1TLS, clientOptions{}, false, "/taken"},
		{"h2 go windows", protoH2, clientOptions{}, false, "/events"},
		{"h2 connection window smaller than a stream's", protoH2, clientOptions{streamWindow: 3 << 20, connWindow: 1 << 20}, true, "/events"},
		{"h3 quic-go windows", protoH3, clientOptions{}, false, "/events"},
		{"h3 connection window smaller than a stream's", protoH3, clientOptions{streamWindow: 3 << 20, connWindow: 1 << 20}, true, "/events"},
	} {
		t.Run(c.name, func(t *testing.T) {
			slowStreamSharesConnection(t, hub, c.p, c.o, c.starved, c.path)
		})
	}
}

func slowStreamSharesConnection(t *testing.T, hub *Hub, p protocol, o clientOptions, starved bool, slowPath string) {
	streamCount(t, hub, 0)
	handlers := streamHandlers()
	topic := fmt.Sprintf("shared-%d", time.Now().UnixNano())
	client := newProtocolClient(t, p, o)
	slow := openSecure(t, client, p, slowPath+"?topic="+topic, nil)
	fast := openSecure(t, client, p, "/fast?topic="+topic, nil)
	streamCount(t, hub, 2)
	slowBefore := hub.counters.disconnects[endSlow].Load()

	type receipt struct {
		id string
		at time.Time
	}
	got := make(chan receipt, 10000)
	go func() {
		defer close(got)
		for {
			f, err := fast.NextEvent(3 * wait)
			if err != nil || f.Data == "stop" {
				return
			}
			got <- receipt{f.LastID, f.At}
		}
	}()

	// publish until the slow stream has been dropped for half a second
	payload := strings.Repeat("x", 24<<10)
	var ids []string
	start := time.Now()
	var droppedAt time.Time
	tick := time.NewTicker(2 * time.Millisecond)
	for i := 0; i < 5000 && (droppedAt.IsZero() || time.Since(droppedAt) < 500*time.Millisecond); i++ {
		<-tick.C
		ids = append(ids, publishTo(t, fmt.Sprintf("%d %s", i, payload), topic).ID)
		if droppedAt.IsZero() && hub.counters.disconnects[endSlow].Load() > slowBefore {
			droppedAt = time.Now()
		}
	}
	tick.Stop()
	if droppedAt.IsZero() {
		t.Fatalf("the slow stream was not dropped after %d events of 24 KiB", len(ids))
	}
	t.Logf("%d events of 24 KiB published; the slow stream was dropped after %v",
		len(ids), droppedAt.Sub(start).Round(time.Millisecond))

	// the dropped stream's writer ends although its client reads nothing
	ended := true
	deadline := time.Now().Add(2 * time.Second)
	for streamHandlers() > handlers+1 {
		if time.Now().After(deadline) {
			ended = false
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// then the client discards what the slow stream was sent, giving its
	// connection's window back
	slow.Close()
	publishTo(t, "stop", topic)

	var maxGap time.Duration
	var last time.Time
	n := 0
	for r := range got {
		if n < len(ids) && r.id != ids[n] {
			t.Fatalf("the healthy stream's event %d is %s, want %s", n, r.id, ids[n])
		}
		if !last.IsZero() && r.at.Sub(last) > maxGap {
			maxGap = r.at.Sub(last)
		}
		last = r.at
		n++
	}
	t.Logf("the healthy stream got %d events, longest gap %v", n, maxGap.Round(time.Millisecond))
	if n != len(ids) {
		t.Fatalf("the healthy stream got %d events of %d", n, len(ids))
	}
	if !starved && maxGap > time.Second {
		t.Errorf("the healthy stream was silent for %v while the slow one was stalled", maxGap)
	}
	if !ended {
		t.Errorf("the dropped stream's writer was still running 2s after the drop")
	}
}

// streamHandlers counts the goroutines of this process that run a
// stream's writer loop: net/http's or quic-go's handler goroutines, and
// the goroutines of streams that took their connection over.
func streamHandlers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "caddy-sse.(*") && strings.Contains(g, ").loop(") {
			count++
		}
	}
	return count
}

// rawTLSStream opens a stream over HTTPS with HTTP/1.1 on a bare TLS
// connection, which costs the test process no goroutine, and returns once
// the headers have arrived.
func rawTLSStream(t *testing.T, path string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", fmt.Sprintf("127.0.0.1:%d", testHTTPS),
		&tls.Config{RootCAs: testRoots.Load(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("negotiated %q, want http/1.1", p)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\n\r\n", path, testHTTPS)
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		t.Fatalf("status line %q, %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the headers: %v", err)
		}
		if line == "\r\n" {
			_ = c.SetReadDeadline(time.Time{})
			return c, br
		}
	}
}

// TestHijackOverTLS checks what taking a connection over does to HTTPS
// streams with HTTP/1.1 (Caddy's answer to a client that offers no h2):
// the TLS connection is taken over, so the stream keeps one goroutine on
// the server instead of two; a client that closes its connection (a TLS
// close_notify, then FIN) is noticed by the probe within a tick; and the
// body is chunked and ends with the last chunk. The stream suite runs
// over it in TestProtocolsStreamSuiteH1TLSHijack.
func TestHijackOverTLS(t *testing.T) {
	t.Run("goroutines", func(t *testing.T) {
		checkTakeOverFreesGoroutines(t, "TLS stream", startSecure, func() io.Closer {
			c, _ := rawTLSStream(t, "/events?topic=g")
			return c
		})
	})
	t.Run("closed client", func(t *testing.T) {
		startSecure(t, "", "sse /events {\n\t\theartbeat 3s\n\t\thijack\n\t}")
		hub := findHub(t, "default")
		streamCount(t, hub, 0)
		clientBefore := hub.counters.disconnects[endClient].Load()
		c, _ := rawTLSStream(t, "/events?topic=closed")
		streamCount(t, hub, 1)
		closed := time.Now()
		c.Close()
		goneWithin(t, hub, 0, 1600*time.Millisecond, closed)
		if n := hub.counters.disconnects[endClient].Load() - clientBefore; n != 1 {
			t.Fatalf("%d client disconnects counted, want 1", n)
		}
	})
	t.Run("framing", func(t *testing.T) {
		startSecure(t, "", "sse /events {\n\t\thijack\n\t\tmax_age 1s\n\t}\n\tsse_publish /publish")
		c, br := rawTLSStream(t, "/events?topic=framing")
		publishTo(t, "framed", "framing")
		_ = c.SetReadDeadline(time.Now().Add(wait))
		body, err := io.ReadAll(br)
		if err != nil {
			t.Fatal(err)
		}
		text := string(body)
		if !strings.Contains(text, "data: framed\n\n") || !strings.HasPrefix(text[strings.Index(text, "\r\n")+2:], "retry: ") {
			t.Fatalf("body %q", text)
		}
		if !strings.HasSuffix(text, "\r\n0\r\n\r\n") {
			t.Fatalf("the body ends with %q, not the last chunk", text[max(0, len(text)-20):])
		}
	})
}

// TestProtocolsStalledWriteEnds stalls a stream's writes over each
// protocol (a client with small windows and buffers that reads nothing,
// a queue large enough never to overflow) and checks that the stream
// ends as slow within write_timeout of its last progress, its handler
// gone: the bound holds whether the protocol's write deadline is a
// socket's (HTTP/1.1), a stream's reset by net/http's HTTP/2 server, or
// a QUIC stream's.
func TestProtocolsStalledWriteEnds(t *testing.T) {
	site := `sse /events {
		buffer 100000
		heartbeat 1m
		write_timeout 1s
	}
	sse_publish /publish {
		max_size 10MiB
	}`
	startSecure(t, `sse {
		hub default {
			history 100000
		}
	}`, site)
	hub := findHub(t, "default")
	for _, p := range secure {
		t.Run(p.name, func(t *testing.T) {
			streamCount(t, hub, 0)
			handlers := streamHandlers()
			slowBefore := hub.counters.disconnects[endSlow].Load()
			client := newProtocolClient(t, p, clientOptions{small: true})
			openSecure(t, client, p, "/events?topic=stall", nil)
			streamCount(t, hub, 1)
			// 50 events of 8 KiB a request until the stream falls 20 MiB
			// behind, more than a loopback socket's buffers hold
			payload := strings.Repeat("x", 8<<10)
			var body strings.Builder
			body.WriteString("[")
			for i := range 50 {
				if i > 0 {
					body.WriteString(",")
				}
				fmt.Fprintf(&body, `{"topic":"stall","data":"%s"}`, payload)
			}
			body.WriteString("]")
			var last time.Time
			for range 50 {
				if r := post(t, "/publish", "application/json", body.String()); r.Status != 200 {
					t.Fatalf("publish: %d %s", r.Status, r.Body)
				}
				last = time.Now()
				if hub.counters.disconnects[endSlow].Load() > slowBefore {
					break
				}
			}
			eventually(t, "the stalled stream is dropped as slow", func() bool {
				return hub.counters.disconnects[endSlow].Load() > slowBefore
			})
			eventually(t, "its handler ends", func() bool { return streamHandlers() == handlers })
			d := time.Since(last)
			t.Logf("dropped and ended %v after the last publish", d.Round(time.Millisecond))
			if d > 3*time.Second {
				t.Fatalf("the stalled stream ended %v after the last publish, want about write_timeout (1s)", d)
			}
		})
	}
}

// TestProtocolsReloadDoesNotWaitForClientsThatNeverRead: over each
// protocol, a reload completes within about a second while streams are
// blocked on clients that do not read: one stuck in the replay of 48
// events of 64 KiB (a bogus Last-Event-ID), one stuck writing 48 such
// events published live (fewer than its buffer); 3 MiB each, several
// times what the small clients' windows and buffers, and the server's
// send buffer, hold.
func TestProtocolsReloadDoesNotWaitForClientsThatNeverRead(t *testing.T) {
	site := `sse /events {
		buffer 512%s
	}
	sse_publish /publish {
		max_size 4MiB
	}`
	publishLarge := func(topic string) { publishLarge(t, topic, 48) }
	for _, p := range secure {
		t.Run(p.name, func(t *testing.T) {
			startSecure(t, "", fmt.Sprintf(site, ""))
			publishLarge("big")
			openSecure(t, newProtocolClient(t, p, clientOptions{small: true}), p, "/events?topic=big",
				http.Header{"Last-Event-ID": {"bogus"}})
			openSecure(t, newProtocolClient(t, p, clientOptions{small: true}), p, "/events?topic=live", nil)
			publishLarge("live")
			start := time.Now()
			startSecure(t, "", fmt.Sprintf(site, "\n\t\tretry 5s"))
			d := time.Since(start)
			t.Logf("reloaded in %v", d.Round(time.Millisecond))
			if d > 3*time.Second {
				t.Errorf("the reload took %v", d)
			}
		})
	}
}
