//go:build unix

package browser

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestStopOverHTTPS stops Caddy (SIGTERM) while HTTPS streams are blocked
// on clients that never read, over HTTP/1.1, HTTP/2 and HTTP/3: Caddy must
// exit within about a second, as over plain HTTP/1.1 (e2e's
// TestStopDoesNotWaitForClientsThatNeverRead). One stream is stuck in the
// replay of 200 events of 64 KiB, one in writing 200 such events
// published live. Over HTTP/3 the site has a grace_period of 2 s: without
// one, Caddy's HTTP/3 server waits for its clients to close their QUIC
// connections, however idle (see TestOverHTTPS). No browser is needed:
// the clients are Go's and quic-go's, with small windows.
func TestStopOverHTTPS(t *testing.T) {
	t.Parallel() // waiting for processes to stop: alongside the others that wait
	for i, c := range []struct {
		name  string
		grace string
		limit time.Duration
	}{
		{"h1tls", "", 3 * time.Second},
		{"h2", "", 3 * time.Second},
		{"h3", "grace_period 2s", 4 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // ports of its own
			p := testPorts(16 + i)
			base := fmt.Sprintf("https://127.0.0.1:%d", p.https)
			storage := t.TempDir()
			e := &env{secure: true, storage: storage, global: c.grace}
			proc := caddyproc.Start(t, e.caddyfile(p, "", fmt.Sprintf(`%s {
	tls internal
	sse /events {
		buffer 512
	}
	sse_publish /publish {
		max_size 4MiB
	}
}`, base)), p.admin)
			client := stuckClient(t, c.name, storage, p)
			publishLarge(t, base, "big")
			openStuck(t, client, base+"/events?topic=big", "bogus")
			openStuck(t, client, base+"/events?topic=live", "")
			publishLarge(t, base, "live")
			took, err := proc.Terminate(c.limit)
			if err != nil {
				t.Fatalf("caddy did not exit within %v of SIGTERM: %v", c.limit, err)
			}
			t.Logf("caddy exited %v after SIGTERM", took.Round(time.Millisecond))
		})
	}
}

// stuckClient returns a client of protocol proto that trusts the local CA
// in storage and has small windows and buffers, a connection per request.
func stuckClient(t *testing.T, proto, storage string, p ports) *http.Client {
	t.Helper()
	conf := &tls.Config{RootCAs: localCA(t, storage, p)}
	if proto == "h3" {
		tr := &http3.Transport{TLSClientConfig: conf, QUICConfig: &quic.Config{
			InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10,
			InitialConnectionReceiveWindow: 64 << 10, MaxConnectionReceiveWindow: 64 << 10,
		}}
		t.Cleanup(func() { _ = tr.Close() })
		return &http.Client{Transport: tr}
	}
	tr := &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true, Protocols: new(http.Protocols),
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 16 << 10, MaxReceiveBufferPerConnection: 64 << 10}}
	tr.Protocols.SetHTTP1(proto == "h1tls")
	tr.Protocols.SetHTTP2(proto == "h2")
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// openStuck opens a stream that is never read, until the test ends.
func openStuck(t *testing.T, c *http.Client, url, lastID string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
}

// publishLarge publishes 200 events of 64 KiB to topic, 20 per request.
func publishLarge(t *testing.T, base, topic string) {
	t.Helper()
	publishMany(t, base+"/publish", topic, 64<<10, 20, 10)
}
