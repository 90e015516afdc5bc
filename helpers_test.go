package caddysse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// The ports of the in-process Caddy of this package's tests: caddytest's,
// moved by SSE_TEST_PORT_OFFSET.
var (
	testAdmin = caddyproc.Port(2999)
	testHTTP  = caddyproc.Port(9080)
	testBase  = fmt.Sprintf("http://localhost:%d", testHTTP)
)

// TestMain runs the tests in three processes at once (runShards), then
// removes the Caddy storage of this process's tests.
func TestMain(m *testing.M) {
	caddytest.Default.AdminPort = testAdmin
	code := runShards(m)
	_ = os.RemoveAll(testStorage())
	os.Exit(code)
}

// wait is the safety net of every wait in these tests.
const wait = 10 * time.Second

// hijackAll makes startCaddy add the hijack option to every sse
// directive, to run a test's streams on connections taken over.
var hijackAll bool

// startVia and openVia, when set, take the place of startCaddy's config
// and of openStream: protocols_test.go runs the stream tests again over
// HTTPS with HTTP/1.1, HTTP/2 and HTTP/3.
var (
	startVia func(t *testing.T, global, site string)
	openVia  func(t *testing.T, client *http.Client, path string, header http.Header) *ssetest.Stream
)

var (
	sseLineRE  = regexp.MustCompile(`(?m)^(\s*sse(?:\s+[^\s{]+)?)\s*$`)
	sseBlockRE = regexp.MustCompile(`(?m)^(\s*sse(?:\s+[^\s{]+)?\s*\{)\s*$`)
)

// withHijack adds the hijack option to every sse directive of a site.
func withHijack(site string) string {
	site = sseBlockRE.ReplaceAllString(site, "$1\n\t\thijack")
	return sseLineRE.ReplaceAllString(site, "$1 {\n\t\thijack\n\t}")
}

// startCaddy loads a config into the test process's Caddy: global options
// (inside the global block) and the directives of one site.
func startCaddy(t *testing.T, global, site string) {
	t.Helper()
	if hijackAll {
		site = withHijack(site)
	}
	if startVia != nil {
		startVia(t, global, site)
		return
	}
	cfg := fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	%s
}
http://localhost:%d {
	%s
}
`, testAdmin, testHTTP, testHTTP+363, global, testHTTP, site)
	caddytest.NewTester(t).InitServer(cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	// connections kept alive by the previous config's server are closing
	http.DefaultClient.CloseIdleConnections()
}

// findHub returns the open hub called name.
func findHub(t *testing.T, name string) *Hub {
	t.Helper()
	var found *Hub
	hubs.Range(func(_, v any) bool {
		if h := v.(*Hub); h.name == name {
			found = h
		}
		return true
	})
	if found == nil {
		t.Fatalf("no hub %q", name)
	}
	return found
}

// publishResp is a decoded publish answer.
type publishResp struct {
	Status int
	Header http.Header
	Body   string
	Result publishResult
	Error  string
}

// post sends a publish request.
func post(t *testing.T, path, contentType, body string) publishResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, testBase+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) publishResp {
	t.Helper()
	status, header, b := ssetest.DoT(t, req)
	pr := publishResp{Status: status, Header: header, Body: string(b)}
	if status == http.StatusOK && strings.HasPrefix(pr.Body, "{") {
		if err := json.Unmarshal(b, &pr.Result); err != nil {
			t.Fatalf("decoding %q: %v", b, err)
		}
	} else {
		var eb errorBody
		_ = json.Unmarshal(b, &eb)
		pr.Error = eb.Error
	}
	return pr
}

// publishForm publishes a form and fails the test unless it is accepted.
func publishForm(t *testing.T, path string, v url.Values) publishResult {
	t.Helper()
	pr := post(t, path, "application/x-www-form-urlencoded", v.Encode())
	if pr.Status != http.StatusOK {
		t.Fatalf("publish %v: %d %s", v, pr.Status, pr.Body)
	}
	return pr.Result
}

// publishTo publishes data to topics through /publish.
func publishTo(t *testing.T, data string, topics ...string) publishResult {
	t.Helper()
	return publishForm(t, "/publish", url.Values{"topic": topics, "data": {data}})
}

// openStream subscribes to a path of the test site and checks that the
// stream started.
func openStream(t *testing.T, client *http.Client, path string, header http.Header) *ssetest.Stream {
	t.Helper()
	if openVia != nil {
		return openVia(t, client, path, header)
	}
	return ssetest.OpenT(t, client, testBase+path, header)
}

// nextEvent returns the stream's next event or fails the test.
func nextEvent(t *testing.T, s *ssetest.Stream) ssetest.Frame {
	t.Helper()
	return s.EventT(t, wait)
}

// eventually polls cond until it holds, or fails the test after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustUnmarshal(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
}

// timeNow is time.Now, for benchmarks that need a timestamp.
var timeNow = time.Now
