//go:build unix

package browser

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// fullSocketPorts are the test numbers of TestFullHTTP2SocketHoldsNoStop.
const fullSocketPorts = 37

// TestFullHTTP2SocketHoldsNoStop: an HTTP/2 client that stops reading
// its socket (a 4 KiB receive buffer, and flow-control windows as large
// as the protocol allows, so that the server writes until the socket is
// full) holds neither a reload nor a stop: once its connection's socket
// is full, not even the stream's reset or the server's GOAWAY can be
// written on it, and Caddy's default grace period would wait for it for
// ever (a red-team run: still running 90 s after SIGTERM). The reload
// ends its stream within about a second, and SIGTERM ends Caddy.
func TestFullHTTP2SocketHoldsNoStop(t *testing.T) {
	t.Parallel() // ports of its own; it mostly waits
	p := testPorts(fullSocketPorts)
	base := fmt.Sprintf("https://127.0.0.1:%d", p.https)
	storage := t.TempDir()
	e := &env{secure: true, storage: storage}
	site := func(retry string) string {
		return e.caddyfile(p, "", fmt.Sprintf(`%s {
	tls internal
	sse /events {
		retry %s
	}
	sse_publish /publish {
		max_size 4MiB
	}
}`, base, retry))
	}
	c := caddyproc.Start(t, site("3s"), p.admin)
	rawH2Stream(t, localCA(t, storage, p), p.https, "/events?topic=full")
	waitUntil(t, wait, "the stream is subscribed", func() bool { return subscribers(t, c) == 1 }, nil)
	publishMany(t, base+"/publish", "full", 60<<10, 20, 15) // 300 events of 60 KiB: far more than the socket holds

	start := time.Now()
	if err := c.Load(site("5s")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*time.Second, "the old config's stream ends", func() bool { return subscribers(t, c) == 0 }, nil)
	t.Logf("reloaded, and the stuck stream ended, in %v", time.Since(start).Round(time.Millisecond))

	// once more on the new config, then SIGTERM
	rawH2Stream(t, localCA(t, storage, p), p.https, "/events?topic=full")
	waitUntil(t, wait, "the stream is subscribed", func() bool { return subscribers(t, c) == 1 }, nil)
	publishMany(t, base+"/publish", "full", 60<<10, 20, 15)
	took, err := c.Terminate(3 * time.Second)
	if err != nil {
		t.Fatalf("caddy did not exit within 3s of SIGTERM: %v", err)
	}
	t.Logf("caddy exited %v after SIGTERM", took.Round(time.Millisecond))
}

// localCA returns the root of Caddy's local CA in storage, once Caddy
// serves its certificate on port p.https.
func localCA(t *testing.T, storage string, p ports) *x509.CertPool {
	t.Helper()
	var pool *x509.CertPool
	waitUntil(t, wait, "Caddy's local CA exists", func() bool {
		pem, err := os.ReadFile(filepath.Join(storage, "pki", "authorities", "local", "root.crt"))
		pool = x509.NewCertPool()
		return err == nil && pool.AppendCertsFromPEM(pem)
	}, nil)
	awaitCertificate(t, p, &tls.Config{RootCAs: pool})
	return pool
}

// rawH2Stream opens a stream with a GET of path over HTTP/2 on a TLS
// connection of its own with a 4 KiB receive buffer, its stream and
// connection windows as large as HTTP/2 allows, and never reads from the
// connection again: what the server writes fills the socket.
func rawH2Stream(t *testing.T, roots *x509.CertPool, port int, path string) {
	t.Helper()
	d := &net.Dialer{Timeout: wait, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	authority := fmt.Sprintf("127.0.0.1:%d", port)
	conn, err := tls.DialWithDialer(d, "tcp", authority, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if proto := conn.ConnectionState().NegotiatedProtocol; proto != "h2" {
		t.Fatalf("negotiated %q, want h2", proto)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr := http2.NewFramer(conn, conn)
	const maxWindow = 1<<31 - 1
	err = errors.Join(
		func() error { _, err := conn.Write([]byte(http2.ClientPreface)); return err }(),
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow}),
		fr.WriteWindowUpdate(0, maxWindow-65535),
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}),
	)
	if err != nil {
		t.Fatal(err)
	}
}

// subscribers returns the default hub's subscribers, from the admin API.
func subscribers(t *testing.T, c *caddyproc.Caddy) int {
	t.Helper()
	resp, err := c.Admin(http.MethodGet, "/sse/hubs/default", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hub struct {
		Subscribers int `json:"subscribers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&hub); err != nil {
		t.Fatal(err)
	}
	return hub.Subscribers
}
