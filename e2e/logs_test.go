package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// opsLogLines returns the JSON log lines of Caddy's log with the message
// msg.
func opsLogLines(log, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(log, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == msg {
			out = append(out, entry)
		}
	}
	return out
}

// TestStreamLogs: with debug logging, every stream leaves a line when it
// opens, is refused and closes, with the client's address, the hub, the
// topics, and on closing the duration and the reason; no payload is ever
// logged.
func TestStreamLogs(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2405, 8405, "debug", `sse /events {
		max_subscribers 1
	}
	sse_publish /publish`)
	const payload = "payload-5ecret-7f3a"
	client := ssetest.NewClient()
	s := ssetest.OpenT(t, client, srv.base+"/events?topic=logs&topic=more", nil)
	opsPublish(t, srv.base+"/publish", "topic=logs&data="+payload)
	if f := s.EventT(t, opsWait); f.Data != payload {
		t.Fatalf("got %q", f.Data)
	}
	opsPublish(t, srv.AdminURL("/sse/hubs/default/publish"), "topic=logs&data="+payload)
	s.EventT(t, opsWait)
	opsReadToEnd(t, ssetest.OpenT(t, client, srv.base+"/events?topic=refused", nil))
	s.Close()

	var closed []map[string]any
	opsEventually(t, "the stream's close is logged", func() bool {
		closed = opsLogLines(srv.Log(), "stream closed")
		return len(closed) > 0
	})
	log := srv.Log()
	opened, refused := opsLogLines(log, "stream opened"), opsLogLines(log, "stream refused")
	if len(opened) != 1 || len(refused) != 1 || len(closed) != 1 {
		t.Fatalf("%d opened, %d refused, %d closed lines; want 1 each\n%s", len(opened), len(refused), len(closed), log)
	}
	checkLogLine(t, opened[0], "logs,more", map[string]any{"level": "debug", "resume": false})
	checkLogLine(t, refused[0], "refused", map[string]any{"level": "debug", "reason": "capacity"})
	checkLogLine(t, closed[0], "logs,more", map[string]any{"level": "debug", "reason": "client"})
	if _, ok := closed[0]["duration"].(float64); !ok {
		t.Errorf("no duration in %v", closed[0])
	}
	if strings.Contains(log, payload) {
		t.Errorf("the payload is in the log:\n%s", log)
	}

	// refusals before a stream starts are logged too, with what refused them
	bad := opsDo(t, http.MethodGet, srv.base+"/events?topic=a%01b", "", "")
	req, _ := http.NewRequest(http.MethodGet, srv.base+"/events?topic=logs", nil)
	req.Header.Set("Origin", "https://elsewhere.example")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if bad.status != http.StatusBadRequest || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refusals %d and %d, want 400 and 403", bad.status, resp.StatusCode)
	}
	opsEventually(t, "the refusals are logged", func() bool {
		reasons := map[string]bool{}
		for _, e := range opsLogLines(srv.Log(), "stream refused") {
			reasons[fmt.Sprint(e["reason"])] = true
		}
		return reasons["topics"] && reasons["origin"]
	})
}

// checkLogLine checks the fields every stream line has, its topics, and
// the fields of want.
func checkLogLine(t *testing.T, entry map[string]any, topics string, want map[string]any) {
	t.Helper()
	var got []string
	list, _ := entry["topics"].([]any)
	for _, v := range list {
		s, _ := v.(string)
		got = append(got, s)
	}
	addr, _ := entry["remote_addr"].(string)
	if entry["logger"] != "http.handlers.sse" || entry["hub"] != "default" || !strings.HasPrefix(addr, "127.0.0.1:") ||
		strings.Join(got, ",") != topics {
		t.Errorf("log line %v", entry)
	}
	for k, v := range want {
		if entry[k] != v {
			t.Errorf("%s is %v, want %v in %v", k, entry[k], v, entry)
		}
	}
}

// TestHubLogs: at start and on every reload, one info line per hub says
// its name, transport and history limits, and whether it was created or
// kept with its history; with debug logging, nothing in a reload reads
// like a failure.
func TestHubLogs(t *testing.T) {
	t.Parallel()
	global := func(history int) string {
		return fmt.Sprintf("debug\n\tsse {\n\t\thub chat {\n\t\t\thistory %d\n\t\t}\n\t}", history)
	}
	srv := opsStart(t, 2406, 8406, global(50), "sse /events")
	ready := func(n int) []map[string]any {
		var lines []map[string]any
		opsEventually(t, fmt.Sprintf("%d hub lines", n), func() bool {
			lines = opsLogLines(srv.Log(), "hub ready")
			return len(lines) >= n
		})
		return lines
	}
	lines := ready(2)
	byHub := map[string]map[string]any{}
	for _, l := range lines {
		byHub[l["hub"].(string)] = l
	}
	chat, def := byHub["chat"], byHub["default"]
	if chat == nil || def == nil || chat["level"] != "info" || chat["transport"] != "memory" ||
		chat["history"] != 50.0 || chat["history_max_bytes"] != float64(64<<20) || chat["state"] != "created" ||
		def["history"] != 1000.0 || def["state"] != "created" {
		t.Fatalf("hub lines at start: %v", lines)
	}
	srv.reload(t, global(20), "sse /events")
	lines = ready(4)[2:]
	for _, l := range lines {
		if l["state"] != "kept with its history" {
			t.Errorf("after the reload: %v", l)
		}
		if l["hub"] == "chat" && l["history"] != 20.0 {
			t.Errorf("chat's new limit not logged: %v", l)
		}
	}
	for _, bad := range []string{"handlerError", "unsupported type"} {
		if strings.Contains(srv.Log(), bad) {
			t.Errorf("the log says %q", bad)
		}
	}
}

// TestBurstLogsNoSlowDrop: with the default settings, a 1,000-event JSON
// array published to 100 subscribers that read as they can reaches every
// one of them whole, and the hub logs no warning: no subscriber was
// dropped as slow.
func TestBurstLogsNoSlowDrop(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2413, 8413, "", "sse /events\n\tsse_publish /publish")
	client := ssetest.NewClient()
	streams := make([]*ssetest.Stream, 100)
	for i := range streams {
		streams[i] = ssetest.OpenT(t, client, srv.base+"/events?topic=burst", nil)
	}
	var body strings.Builder
	body.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"topic":"burst","data":"event %d of a burst"}`, i)
	}
	body.WriteString("]")
	r := opsDo(t, "POST", srv.base+"/publish", "application/json", body.String())
	if r.status != 200 {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	var results []opsPublished
	opsDecode(t, r.body, &results)
	for i, s := range streams {
		for j, res := range results {
			if f := s.EventT(t, opsWait); f.LastID != res.ID {
				t.Fatalf("subscriber %d, event %d: %s, want %s", i, j, f.LastID, res.ID)
			}
		}
	}
	for line := range strings.SplitSeq(srv.Log(), "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		logger, _ := entry["logger"].(string)
		ours := logger == "sse" || strings.HasPrefix(logger, "http.handlers.sse")
		if strings.Contains(line, "slow") || ours && entry["level"] != "info" && entry["level"] != "debug" {
			t.Errorf("a line in the log: %s", line)
		}
	}
}

// TestGracePeriodAdvice: a config whose HTTPS site speaks HTTP/3 and that
// sets no grace_period gets one warning that a stop waits for browsers'
// idle QUIC connections; with a grace_period, or without HTTP/3, none.
func TestGracePeriodAdvice(t *testing.T) {
	t.Parallel()
	admin, httpPort, httpsPort := caddyproc.Port(2414), caddyproc.Port(8414), caddyproc.Port(8415)
	config := func(global, protocols string) string {
		return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	local_certs
	skip_install_trust
	storage file_system %s
	%s
	servers {
		protocols %s
	}
}
https://127.0.0.1:%d {
	tls internal
	sse /events
}
`, admin, httpPort, httpsPort, t.TempDir(), global, protocols, httpsPort)
	}
	const advice = "grace_period is not set"
	c := caddyproc.Start(t, config("", "h1 h2 h3"), admin)
	opsEventually(t, "the hub is ready", func() bool { return strings.Contains(c.Log(), "hub ready") })
	if n := strings.Count(c.Log(), advice); n != 1 {
		t.Fatalf("%d warnings about grace_period with HTTP/3 and none set, want 1:\n%s", n, c.Log())
	}
	for _, cfg := range []string{config("grace_period 2s", "h1 h2 h3"), config("", "h1 h2")} {
		before := strings.Count(c.Log(), "hub ready")
		if err := c.Load(cfg); err != nil {
			t.Fatal(err)
		}
		opsEventually(t, "the new config's hub is ready", func() bool { return strings.Count(c.Log(), "hub ready") > before })
		if n := strings.Count(c.Log(), advice); n != 1 {
			t.Fatalf("the warning came again with a config that does not call for it:\n%s", cfg)
		}
	}
}
