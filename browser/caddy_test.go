//go:build unix

package browser

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// Test ports of this package, before SSE_TEST_PORT_OFFSET: admin endpoints
// from 2600, HTTP from 8600 and HTTPS from 8643; each test has its own.
const (
	adminBase = 2600
	httpBase  = 8600
	httpsBase = 8643
)

// ports are the ports of one test's Caddy.
type ports struct {
	admin, http, https int
}

// testPorts returns the ports of test number n. Each test has its own, so
// that none meets another's lingering connections: 0 open before any
// event, 1 event types, 2 and 3 reconnection, 4 reset, 5 capacity, 6
// cross-origin (with HTTP ports 6, 7 and 8), 9 HTTP/2, 10 the demo.
func testPorts(n int) ports {
	return ports{admin: caddyproc.Port(adminBase + n), http: caddyproc.Port(httpBase + n),
		https: caddyproc.Port(httpsBase + n)}
}

// origin is the address of a plain HTTP site on the loopback interface.
func origin(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

// caddyfile returns a Caddyfile: the global options every test needs (its
// admin endpoint and ports, listening on loopback only), more global
// options, and site blocks.
func caddyfile(p ports, global string, sites ...string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	%s
}
%s`, p.admin, p.http, p.https, global, strings.Join(sites, "\n"))
}

// site returns a site block for addr with the given directives, plus an
// access log (the tests read it from Caddy's output) and the harness page.
func site(t *testing.T, addr, directives string) string {
	t.Helper()
	www, err := filepath.Abs(filepath.Join("testdata", "www"))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`%s {
	log
	%s
	root * %s
	file_server
}
`, addr, directives, www)
}

// startCaddy starts a Caddy process on cfg; it is ended when the test ends.
// Without Chromium, the test is skipped first.
func startCaddy(t *testing.T, p ports, cfg string) *caddyproc.Caddy {
	t.Helper()
	needChromium(t)
	return caddyproc.Start(t, cfg, p.admin)
}

// awaitCertificate waits until Caddy completes TLS handshakes on p.https
// with a client of conf: a Caddy that has just started loads or issues
// its certificate after its admin API answers, and fails handshakes until
// then.
func awaitCertificate(t *testing.T, p ports, conf *tls.Config) {
	t.Helper()
	waitUntil(t, wait, "Caddy serves its certificate", func() bool {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.https), conf)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}, nil)
}

// httpClient talks to the test servers: loopback, self-signed
// certificates accepted, and a new connection for every request, since
// the tests reload and restart Caddy, which closes idle connections (a
// POST sent on one that is closing fails, and is not retried).
var httpClient = &http.Client{
	Timeout: wait,
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // Caddy's internal CA, in tests
		DisableKeepAlives: true,
	},
}

// event is one event to publish, as sse_publish takes it in JSON.
type event struct {
	Topic string `json:"topic"`
	Event string `json:"event,omitempty"`
	Data  string `json:"data"`
}

// publish publishes events, in order, with one JSON request to the
// sse_publish route at url, and returns their ids.
func publish(t *testing.T, url string, events ...event) []string {
	t.Helper()
	body, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	return publishJSON(t, url, body)
}

// publishMany publishes requests arrays of perRequest events of size
// bytes to topic, the same body each time (encoded once), and returns
// their ids.
func publishMany(t *testing.T, url, topic string, size, perRequest, requests int) []string {
	t.Helper()
	batch := make([]event, perRequest)
	for i := range batch {
		batch[i] = event{Topic: topic, Data: strings.Repeat("x", size)}
	}
	body, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range requests {
		ids = append(ids, publishJSON(t, url, body)...)
	}
	return ids
}

// publishJSON publishes a JSON body to url and returns the events' ids.
func publishJSON(t *testing.T, url string, body []byte) []string {
	t.Helper()
	resp, err := httpClient.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("publishing to %s: %v", url, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("publishing to %s: reading the answer: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publishing to %s: %d %s", url, resp.StatusCode, answer)
	}
	var results []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(answer, &results); err != nil {
		t.Fatalf("publishing to %s: decoding %s: %v", url, answer, err)
	}
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.ID
	}
	return ids
}

// publishData publishes one event of the default type with data to topic
// and returns its id.
func publishData(t *testing.T, url, topic, data string) string {
	t.Helper()
	return publish(t, url, event{Topic: topic, Data: data})[0]
}

// accessEntry is one line of Caddy's access log.
type accessEntry struct {
	Request struct {
		Method  string      `json:"method"`
		URI     string      `json:"uri"`
		Host    string      `json:"host"`
		Proto   string      `json:"proto"`
		Headers http.Header `json:"headers"`
	} `json:"request"`
	Status int `json:"status"`
}

// accessLog returns the access log entries Caddy printed so far whose URI
// begins with path (all of them for ""), in order. Caddy logs a request
// when it is done: a stream, when it ends.
func accessLog(c *caddyproc.Caddy, path string) []accessEntry {
	var out []accessEntry
	sc := bufio.NewScanner(strings.NewReader(c.Log()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"http.log.access`)) {
			continue
		}
		var e accessEntry
		if json.Unmarshal(line, &e) == nil && strings.HasPrefix(e.Request.URI, path) {
			out = append(out, e)
		}
	}
	return out
}
