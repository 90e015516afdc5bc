package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// The operations tests (metrics, admin API, command, logs) use the base
// ports admin 2400-2407 and 2413 and http 8400-8407 and 8413, one pair
// per test, so that they may run in parallel (2408 stays free: the
// command's test expects nothing there); 8409 is their https_port, never
// bound since their sites are http:// only. Everything listens on
// loopback only.

// opsWait is the safety net of every wait in the operations tests.
const opsWait = 10 * time.Second

// opsServer is a Caddy process serving one http:// site.
type opsServer struct {
	*caddyproc.Caddy
	adminPort, httpPort int
	base                string // the site's URL
}

// opsCaddyfile is a Caddyfile with the admin API on adminPort, global
// options, and one site on httpPort with the given directives.
func opsCaddyfile(adminPort, httpPort int, global, site string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	%s
}

http://localhost:%d {
	%s
}
`, adminPort, httpPort, caddyproc.Port(8409), global, httpPort, site)
}

// opsStart runs Caddy on the config of opsCaddyfile, with the admin API
// on the base port adminBase and the site on httpBase, both moved by
// SSE_TEST_PORT_OFFSET.
func opsStart(t *testing.T, adminBase, httpBase int, global, site string) *opsServer {
	t.Helper()
	s := &opsServer{adminPort: caddyproc.Port(adminBase), httpPort: caddyproc.Port(httpBase)}
	s.base = fmt.Sprintf("http://localhost:%d", s.httpPort)
	s.Caddy = caddyproc.Start(t, opsCaddyfile(s.adminPort, s.httpPort, global, site), s.adminPort)
	return s
}

// reload replaces the config, keeping the ports.
func (s *opsServer) reload(t *testing.T, global, site string) {
	t.Helper()
	if err := s.Load(opsCaddyfile(s.adminPort, s.httpPort, global, site)); err != nil {
		t.Fatal(err)
	}
}

// opsResponse is an answer read whole.
type opsResponse struct {
	status int
	header http.Header
	body   string
}

// opsDo sends a request and reads the whole answer.
func opsDo(t *testing.T, method, url, contentType, body string) opsResponse {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	status, header, b := ssetest.DoWithT(t, opsClient, req)
	return opsResponse{status: status, header: header, body: string(b)}
}

// opsClient sends the operations tests' requests, each on a connection of
// its own: the tests reload Caddy, whose old servers close the connections
// kept alive to them (a POST sent on one as it closes reads EOF, and
// net/http does not retry it).
var opsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// opsPublished is the answer to an accepted publish.
type opsPublished struct {
	ID          string   `json:"id"`
	Topics      []string `json:"topics"`
	Subscribers int      `json:"subscribers"`
}

// opsPublish publishes a form and fails the test unless it is accepted.
func opsPublish(t *testing.T, url, form string) opsPublished {
	t.Helper()
	r := opsDo(t, http.MethodPost, url, "application/x-www-form-urlencoded", form)
	if r.status != http.StatusOK {
		t.Fatalf("publish %s to %s: %d %s", form, url, r.status, r.body)
	}
	var p opsPublished
	opsDecode(t, r.body, &p)
	return p
}

// opsDecode decodes JSON or fails the test.
func opsDecode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
}

// opsError returns the message of a JSON error body.
func opsError(t *testing.T, r opsResponse) string {
	t.Helper()
	var eb struct {
		Error string `json:"error"`
	}
	opsDecode(t, r.body, &eb)
	return eb.Error
}

// opsReadToEnd reads a stream until the server ends it and returns its
// events.
func opsReadToEnd(t *testing.T, s *ssetest.Stream) []ssetest.Frame {
	t.Helper()
	frames, err := s.ReadAll(opsWait)
	if err != nil {
		t.Fatalf("waiting for the stream to end: %v", err)
	}
	var events []ssetest.Frame
	for _, f := range frames {
		if f.Kind == ssetest.KindEvent {
			events = append(events, f)
		}
	}
	return events
}

// opsReadToCut reads a stream whose connection the server cuts (a slow
// subscriber dropped) and returns its whole events.
func opsReadToCut(t *testing.T, s *ssetest.Stream) []ssetest.Frame {
	t.Helper()
	var events []ssetest.Frame
	for {
		f, err := s.Next(opsWait)
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return events
		}
		if err != nil {
			t.Fatalf("waiting for the stream to end: after %d events: %v", len(events), err)
		}
		if f.Kind == ssetest.KindEvent {
			events = append(events, f)
		}
	}
}

// opsEventually polls cond until it holds, or fails the test after opsWait.
func opsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(opsWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// opsEventSize is what an event to one topic, without type or retry,
// counts for in a hub's history.
func opsEventSize(id, topic, data string) int {
	ev := transport.Event{ID: id, Topics: []string{topic}, Wire: transport.AppendEvent(nil, id, "", -1, data)}
	return int(ev.Size())
}

// opsScrape reads a Prometheus text exposition: the value of each series
// by its name and labels as written (`name{a="x",b="y"}`), and the TYPE
// of each metric family.
func opsScrape(t *testing.T, url string) (series map[string]float64, types map[string]string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	series, types = make(map[string]float64), make(map[string]string)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			types[name] = typ
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return series, types
}

// opsHubWant are the expected figures of one hub.
type opsHubWant struct {
	subscribers, connections, published, delivered, replayed int
	disconnects                                              map[string]int
	historyEvents, historyBytes                              int
}

// series returns the metrics series opsHubWant stands for.
func (w opsHubWant) series(hub string) map[string]float64 {
	l := fmt.Sprintf(`{hub=%q}`, hub)
	m := map[string]float64{
		"caddy_sse_subscribers" + l:            float64(w.subscribers),
		"caddy_sse_connections_total" + l:      float64(w.connections),
		"caddy_sse_events_published_total" + l: float64(w.published),
		"caddy_sse_events_delivered_total" + l: float64(w.delivered),
		"caddy_sse_events_replayed_total" + l:  float64(w.replayed),
		"caddy_sse_history_events" + l:         float64(w.historyEvents),
		"caddy_sse_history_bytes" + l:          float64(w.historyBytes),
		"caddy_sse_transport_up" + l:           1,
	}
	for _, reason := range []string{"client", "slow", "max_age", "shutdown", "capacity", "resync", "unavailable"} {
		m[fmt.Sprintf(`caddy_sse_disconnects_total{hub=%q,reason=%q}`, hub, reason)] = float64(w.disconnects[reason])
	}
	return m
}

// opsMismatches lists the series of want that got lacks or differs in.
func opsMismatches(got, want map[string]float64) []string {
	var out []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			out = append(out, fmt.Sprintf("%s missing, want %v", k, v))
		} else if g != v {
			out = append(out, fmt.Sprintf("%s = %v, want %v", k, g, v))
		}
	}
	sort.Strings(out)
	return out
}

// opsWaitMetrics polls url until every series of want has its value
// (counters settle a moment after a client sees the stream's bytes), or
// fails the test listing the differences.
func opsWaitMetrics(t *testing.T, url string, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(opsWait)
	for {
		got, _ := opsScrape(t, url)
		bad := opsMismatches(got, want)
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics at %s:\n%s", url, strings.Join(bad, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// merge returns the union of maps.
func opsMerge(ms ...map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
