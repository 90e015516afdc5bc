//go:build unix

package browser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The testPorts numbers of TestTokenRenewal and TestDemoTokenRenewal:
// ones that TestOverHTTPS's HTTP/3 run (shift 40) leaves free, since it
// has no tests 6 and 7; their HTTP ports are the HTTPS ports of tests 3
// and 4, which serve plain HTTP only.
const (
	tokenRenewalPorts     = 46
	demoTokenRenewalPorts = 47
)

// tokenKey is the HS256 secret of TestTokenRenewal's route.
const tokenKey = "0123456789abcdef0123456789abcdef-token-renewal-test"

// tokenLife is how long the tokens of TestTokenRenewal are valid: exp is
// in whole seconds, so 2 to 3 s from minting.
const tokenLife = 3 * time.Second

// TestTokenRenewal runs the token-renewal snippet of docs/access-control.md,
// as it is, in
// a page whose stream needs a token while events are published without a
// pause. The token server (the page's back end) mints short tokens; its
// second one is signed with another key (a 401: the browser gives up, the
// snippet retries later) and its fourth one has already expired (the
// expired event on connect). So the page renews its token after its
// stream's token expired, after a refusal, after a stream's token expired
// again and after a token expired on connect, and it must end with every
// event once and in order, each new source resuming from the id of the
// last event the page received.
func TestTokenRenewal(t *testing.T) {
	t.Parallel() // mostly waiting for tokens to expire: alongside the others that wait
	snippet := readmeSnippet(t, "token-renewal")
	dir := t.TempDir()
	for _, name := range []string{"index.html", "harness.js"} {
		b, err := os.ReadFile(filepath.Join("testdata", "token", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "renewal.js"), []byte(snippet), 0o644); err != nil {
		t.Fatal(err)
	}
	const topic = "feed"
	if !strings.Contains(snippet, "topic="+topic+"&") {
		t.Fatalf("the snippet of docs/access-control.md does not subscribe to %q; update this test:\n%s", topic, snippet)
	}

	tokens := &tokenServer{topic: topic, bad: 2, expired: 4}
	ts := httptest.NewServer(tokens)
	t.Cleanup(ts.Close)

	p := testPorts(tokenRenewalPorts)
	base := origin(p.http)
	c := startCaddy(t, p, caddyfile(p, "", fmt.Sprintf(`%s {
	log
	sse /events {
		token {
			key %s
			alg HS256
		}
		retry 500ms
	}
	sse_publish /publish
	reverse_proxy /sse-token %s
	root * %s
	file_server
}
`, base, tokenKey, strings.TrimPrefix(ts.URL, "http://"), dir)))
	start := time.Now()
	br := startChromium(t)
	br.navigate(base + "/")

	var st renewalState
	state := func() renewalState {
		st = renewalState{}
		br.mustEval("renewal.state()", &st)
		return st
	}
	detail := func() string {
		b, _ := json.MarshalIndent(st, "", "  ")
		return fmt.Sprintf("tokens issued: %d\npage state: %s\nrequests:\n%s", tokens.count(), b, br.net)
	}
	// Nothing published before the first stream opens could reach it: it
	// has no id to resume from.
	waitUntil(t, wait, "the page's first stream is open", func() bool {
		s := state()
		return len(s.Sources) > 0 && s.Sources[0].Opens > 0
	}, detail)

	// Publish without a pause until the page has had its five tokens, then
	// a few more events, and wait for the page to get the last one.
	const (
		every     = 60 * time.Millisecond
		maxEvents = 300 // 18 s
		wantTok   = 5
		after     = 10 // events published once the fifth token was issued
	)
	var ids, data []string
	tick := time.NewTicker(every) // the pace of publishing, not a wait for anything
	defer tick.Stop()
	for n, left := 0, -1; left != 0; n++ {
		if n == maxEvents {
			t.Fatalf("%d events published, and the token server issued %d tokens, want %d\n%s",
				n, tokens.count(), wantTok, detail())
		}
		d := strconv.Itoa(n)
		ids = append(ids, publishData(t, base+"/publish", topic, d))
		data = append(data, d)
		switch {
		case left > 0:
			left--
		case tokens.count() >= wantTok:
			left = after
		}
		<-tick.C
	}
	last := ids[len(ids)-1]
	waitUntil(t, wait, "the page received the last event, "+last, func() bool {
		s := state()
		return len(s.Received) > 0 && s.Received[len(s.Received)-1].ID == last || len(s.Received) >= len(ids)
	}, detail)

	// Every event, once, in order.
	var gotIDs, gotData []string
	for _, r := range st.Received {
		gotIDs = append(gotIDs, r.ID)
		gotData = append(gotData, r.Data)
	}
	if strings.Join(gotIDs, ",") != strings.Join(ids, ",") || strings.Join(gotData, ",") != strings.Join(data, ",") {
		t.Fatalf("the page got %d events, want %d, each once and in order:\ngot  %q\nwant %q\n%s",
			len(gotData), len(data), gotData, data, detail())
	}

	// What each of the first five sources went through.
	if len(st.Sources) < wantTok {
		t.Fatalf("the page opened %d sources, want %d or more\n%s", len(st.Sources), wantTok, detail())
	}
	src := st.Sources
	for i, s := range src {
		resumed := s.query(t, "last_event_id")
		if i == 0 && resumed != "" || i > 0 && (resumed == "" || resumed != s.LastBefore) {
			t.Errorf("source %d resumed from %q, want the last id the page had received, %q\n%s", i, resumed, s.LastBefore, detail())
		}
		if s.Opens > 1 {
			t.Errorf("source %d opened %d times: the browser reconnected by itself, not the snippet\n%s", i, s.Opens, detail())
		}
		for _, x := range s.Expired {
			var d struct {
				LastEventID string `json:"last_event_id"`
			}
			if err := json.Unmarshal([]byte(x.Data), &d); err != nil || d.LastEventID != x.Last {
				t.Errorf("source %d: expired event %s, want the last id the page had received, %q", i, x.Data, x.Last)
			}
		}
	}
	streamExpired := func(s renewalSource) bool { return s.Opens == 1 && s.Messages > 0 && len(s.Expired) == 1 }
	checks := []struct {
		what string
		ok   bool
	}{
		{"source 0 (token 1) received events, then its token expired", streamExpired(src[0])},
		{"source 1 (token 2, signed with another key) was refused: the browser gave up",
			src[1].Opens == 0 && len(src[1].Errors) == 1 && src[1].Errors[0] == closed},
		{"source 2 (token 3) received events, then its token expired", streamExpired(src[2])},
		{"source 3 (token 4, already expired) got the expired event on connect, and no event",
			src[3].Opens == 1 && src[3].Messages == 0 && len(src[3].Expired) == 1},
		{"source 4 (token 5) received events", src[4].Opens == 1 && src[4].Messages > 0},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("want: %s\n%s", c.what, detail())
		}
	}
	expired := 0
	for _, s := range src {
		expired += len(s.Expired)
	}
	if expired < 3 {
		t.Errorf("the page saw %d expired events, want 3 or more\n%s", expired, detail())
	}
	if n := tokens.count(); n < wantTok {
		t.Errorf("the token server issued %d tokens, want %d or more", n, wantTok)
	}
	// The refusal was Caddy's 401, seen in its access log once the stream
	// requests have ended: all but the last source's.
	var statuses map[int]int
	waitUntil(t, wait, "Caddy logged the refusal and the ended streams", func() bool {
		statuses = map[int]int{}
		for _, e := range accessLog(c, "/events") {
			statuses[e.Status]++
		}
		return statuses[http.StatusUnauthorized] >= 1 && statuses[http.StatusOK] >= 3
	}, func() string { return fmt.Sprintf("statuses of the stream requests: %v", statuses) })
	if statuses[http.StatusUnauthorized] != 1 {
		t.Errorf("statuses of the stream requests Caddy logged: %v, want one 401\n%s", statuses, detail())
	}
	t.Logf("%d events over %d sources, %d tokens issued, %d expired events, in %v from Chromium's start",
		len(ids), len(src), tokens.count(), expired, time.Since(start).Round(time.Millisecond))
}

// renewalState is what the token-renewal page recorded
// (testdata/token/harness.js).
type renewalState struct {
	Received []struct {
		ID   string `json:"id"`
		Data string `json:"data"`
	} `json:"received"`
	Sources []renewalSource `json:"sources"`
}

// renewalSource is one EventSource the snippet opened.
type renewalSource struct {
	URL        string `json:"url"`
	LastBefore string `json:"lastBefore"`
	Opens      int    `json:"opens"`
	Messages   int    `json:"messages"`
	Errors     []int  `json:"errors"`
	Expired    []struct {
		Data string `json:"data"`
		Last string `json:"last"`
	} `json:"expired"`
}

// query returns the query parameter name of the source's URL.
func (s renewalSource) query(t *testing.T, name string) string {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatalf("the URL of a source: %v", err)
	}
	return u.Query().Get(name)
}

// tokenServer is the back end of a page: it mints a token for every
// request, valid for tokenLife, to subscribe to topic. The one it issues
// as its bad-th is signed with another key, its expired-th one has already
// expired (0: none).
type tokenServer struct {
	topic        string
	bad, expired int
	mu           sync.Mutex
	n            int
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.n++
	n := s.n
	s.mu.Unlock()
	now := time.Now()
	exp, key := now.Add(tokenLife), tokenKey
	switch n {
	case s.bad:
		key = strings.ToUpper(tokenKey)
	case s.expired:
		exp = now.Add(-time.Second)
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "alice",
		"iat": now.Unix(),
		"exp": exp.Unix(),
		"sse": map[string]any{"subscribe": []string{s.topic}},
	}).SignedString([]byte(key))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(token))
}

// count returns how many tokens the server issued.
func (s *tokenServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// readmeSnippet returns the code of the ```js block between the markers
// <!-- snippet: name --> and <!-- /snippet: name --> of docs/access-control.md
// (the docs the README links to).
func readmeSnippet(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "access-control.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- snippet: "+name+" -->\n")
	section, _, ok2 := strings.Cut(rest, "<!-- /snippet: "+name+" -->")
	if !ok || !ok2 {
		t.Fatalf("docs/access-control.md has no snippet %q between its markers", name)
	}
	_, code, ok := strings.Cut(section, "```js\n")
	code, after, ok2 := strings.Cut(code, "\n```\n")
	if !ok || !ok2 || strings.Contains(after, "```") {
		t.Fatalf("the snippet %q of docs/access-control.md is not one ```js block:\n%s", name, section)
	}
	return code + "\n"
}

// TestDemoTokenRenewal runs the demo of Caddyfile.example on a route that
// asks for a token, with the page given a token URL (data-token-url): it
// renews its token each time its stream's expires and lists every event
// once, in order; an administrator's disconnect is shown as such.
func TestDemoTokenRenewal(t *testing.T) {
	t.Parallel() // mostly waiting for tokens to expire
	p := testPorts(demoTokenRenewalPorts)
	base := fmt.Sprintf("http://localhost:%d", p.http)
	// The demo, with a token URL.
	src, err := filepath.Abs(filepath.Join("..", "examples", "demo"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "index.html" {
			const body = `<body data-state="connecting">`
			if !bytes.Contains(b, []byte(body)) {
				t.Fatalf("the demo's index.html has no %s; update this test", body)
			}
			b = bytes.Replace(b, []byte(body), []byte(`<body data-state="connecting" data-token-url="/sse-token">`), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tokens := &tokenServer{topic: "demo"}
	ts := httptest.NewServer(tokens)
	t.Cleanup(ts.Close)
	cfg := demoConfig(t, plain, p)
	for old, repl := range map[string]string{
		"root * " + src: "root * " + dir,
		"sse /events {": fmt.Sprintf("reverse_proxy /sse-token %s\n\tsse /events {\n\t\ttoken {\n\t\t\tkey %s\n\t\t\talg HS256\n\t\t}",
			strings.TrimPrefix(ts.URL, "http://"), tokenKey),
	} {
		if !strings.Contains(cfg, old) {
			t.Fatalf("the demo's config has no %q; update this test:\n%s", old, cfg)
		}
		cfg = strings.Replace(cfg, old, repl, 1)
	}
	c := startCaddy(t, p, cfg)
	br := startChromium(t)
	br.navigate(base + "/")
	waitState(t, br, "open")

	// Publish until the page has had three tokens, and three more events.
	var want []string
	tick := time.NewTicker(100 * time.Millisecond) // the pace of publishing
	defer tick.Stop()
	for n, left := 0, -1; left != 0; n++ {
		if n == 200 {
			t.Fatalf("%d events published, and the token server issued %d tokens, want 3", n, tokens.count())
		}
		d := fmt.Sprintf("event %d", n)
		publishData(t, base+"/publish", "demo", d)
		want = append(want, d)
		switch {
		case left > 0:
			left--
		case tokens.count() >= 3:
			left = 3
		}
		<-tick.C
	}
	waitDemoEvents(t, br, len(want))
	var shown struct {
		Data []string // the events listed, oldest first
		Back int      // "Back with a fresh token" rows
	}
	br.mustEval(`(() => {
		const rows = [...document.querySelectorAll("#events li")].reverse();
		return {
			Data: rows.filter((li) => !li.matches(".system")).map((li) => li.querySelector(".data").textContent),
			Back: rows.filter((li) => li.textContent.includes("Back with a fresh token")).length,
		};
	})()`, &shown)
	if strings.Join(shown.Data, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the demo lists\n%q\nwant\n%q", shown.Data, want)
	}
	if shown.Back < 2 {
		t.Errorf("the demo says %d times that it came back with a fresh token, want 2 or more", shown.Back)
	}

	// An administrator disconnects the page's stream.
	resp, err := c.Admin(http.MethodPost, "/sse/hubs/default/disconnect", "application/json", `{"topic": "demo"}`)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: %s", resp.Status)
	}
	waitFor(t, br, "the demo shows the disconnection",
		`[...document.querySelectorAll("#events li.system .data")].some((d) => d.textContent === "disconnected by the server: revoked")`)
	waitState(t, br, "reconnecting")
}
