package benchfloor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/quic-go/quic-go/http3"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// Ports of the in-process Caddy of TestFloorOverEveryProtocol, before
// SSE_TEST_PORT_OFFSET: admin API 2703, HTTP 8703 (unused), HTTPS 8704
// (TCP and UDP).
const (
	adminBase = 2703
	httpBase  = 8703
	httpsBase = 8704
)

// floorStorage is where the in-process Caddy keeps its certificates and
// its local CA; TestMain removes it at the end.
func floorStorage() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("caddy-sse-floor-storage-%d", caddyproc.Port(httpsBase)))
}

// TestFloorOverEveryProtocol serves sse_floor from Caddy over HTTPS and
// checks that it answers as it does over plain HTTP/1.1, with HTTP/1.1,
// HTTP/2 and HTTP/3: the event stream's headers at once, nothing more,
// and the handler gone soon after its client.
func TestFloorOverEveryProtocol(t *testing.T) {
	admin, httpPort, httpsPort := caddyproc.Port(adminBase), caddyproc.Port(httpBase), caddyproc.Port(httpsBase)
	storage := floorStorage()
	caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: admin}).InitServer(fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	local_certs
	skip_install_trust
	storage file_system %s
}
https://localhost:%d {
	tls internal
	sse_floor /events
}
`, admin, httpPort, httpsPort, storage, httpsPort), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	roots := x509.NewCertPool()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pem, err := os.ReadFile(filepath.Join(storage, "pki", "authorities", "local", "root.crt"))
		if err == nil && roots.AppendCertsFromPEM(pem) {
			var conn *tls.Conn
			conn, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort), &tls.Config{RootCAs: roots, ServerName: "localhost"})
			if err == nil {
				conn.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the HTTPS site does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	h3 := &http3.Transport{TLSClientConfig: tlsConf}
	defer h3.Close()
	h1 := &http.Transport{TLSClientConfig: tlsConf, Protocols: new(http.Protocols)}
	h1.Protocols.SetHTTP1(true)
	h2 := &http.Transport{TLSClientConfig: tlsConf, Protocols: new(http.Protocols)}
	h2.Protocols.SetHTTP2(true)
	for _, c := range []struct {
		proto string
		rt    http.RoundTripper
	}{{"HTTP/1.1", h1}, {"HTTP/2.0", h2}, {"HTTP/3.0", h3}} {
		t.Run(c.proto, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://localhost:%d/events", httpsPort), nil)
			resp, err := (&http.Client{Transport: c.rt}).Do(req) // returns once the headers are flushed
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != c.proto || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%s %d, headers %v", resp.Proto, resp.StatusCode, resp.Header)
			}
			if n := floorHandlers(); n != 1 {
				t.Fatalf("%d floor handlers running, want 1", n)
			}
			cancel() // the client leaves: RST_STREAM, STOP_SENDING, or a closed connection
			deadline := time.Now().Add(5 * time.Second)
			for floorHandlers() > 0 {
				if time.Now().After(deadline) {
					t.Fatal("the floor handler still runs 5s after its client left")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// floorHandlers counts the goroutines in Floor.ServeHTTP.
func floorHandlers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "benchfloor.Floor.ServeHTTP(")
}
