package caddysse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

func TestPublishFormats(t *testing.T) {
	startCaddy(t, "", basicSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=pf&topic=pf2", nil)

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("topic", "pf")
	_ = mw.WriteField("event", "multi")
	_ = mw.WriteField("data", "from multipart\nline 2")
	_ = mw.WriteField("retry", "1500")
	_ = mw.Close()

	var mpFile bytes.Buffer
	mwf := multipart.NewWriter(&mpFile)
	_ = mwf.WriteField("topic", "pf")
	fw, _ := mwf.CreateFormFile("data", "payload.txt")
	_, _ = fw.Write([]byte("from a file"))
	_ = mwf.Close()

	cases := []struct {
		name, path, ctype, body string
		typ, data               string
		topics                  []string
	}{
		{"form", "/publish", "application/x-www-form-urlencoded", "topic=pf&event=f&data=from+form", "f", "from form", []string{"pf"}},
		{"form type alias", "/publish", "application/x-www-form-urlencoded", "topic=pf&type=alias&data=x", "alias", "x", []string{"pf"}},
		{"form two topics", "/publish", "application/x-www-form-urlencoded", "topic=pf&topic=pf2&data=both", "message", "both", []string{"pf", "pf2"}},
		{"form topic in query", "/publish?topic=pf", "application/x-www-form-urlencoded", "data=query+topic", "message", "query topic", []string{"pf"}},
		{"multipart", "/publish", mw.FormDataContentType(), mp.String(), "multi", "from multipart\nline 2", []string{"pf"}},
		{"multipart file", "/publish", mwf.FormDataContentType(), mpFile.String(), "message", "from a file", []string{"pf"}},
		{"json string data", "/publish", "application/json", `{"topic":"pf","event":"j","data":"text"}`, "j", "text", []string{"pf"}},
		{"json object data", "/publish", "application/json; charset=utf-8", `{"topic":["pf"],"data": {"a": [1, 2], "b": "c"}}`, "message", `{"a":[1,2],"b":"c"}`, []string{"pf"}},
		{"json number data", "/publish", "application/json", `{"topic":"pf","data":42}`, "message", "42", []string{"pf"}},
		{"json null data", "/publish", "application/json", `{"topic":"pf","data":null}`, "message", "null", []string{"pf"}},
		{"json no data", "/publish", "application/json", `{"topic":"pf"}`, "message", "", []string{"pf"}},
		{"json type alias", "/publish", "application/json", `{"topic":"pf","type":"t","data":"x"}`, "t", "x", []string{"pf"}},
		{"raw text", "/publish?topic=pf&event=raw", "text/plain", "raw\nbody", "raw", "raw\nbody", []string{"pf"}},
		{"raw without content type", "/publish?topic=pf", "", "no type", "message", "no type", []string{"pf"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, c.path, c.ctype, c.body)
			if r.Status != http.StatusOK {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if strings.Join(r.Result.Topics, ",") != strings.Join(c.topics, ",") || r.Result.Subscribers != 1 || r.Result.ID == "" {
				t.Fatalf("answer %s", r.Body)
			}
			f := nextEvent(t, s)
			if f.Type != c.typ || f.Data != c.data || f.LastID != r.Result.ID {
				t.Fatalf("got %s %q %s, want %s %q %s", f.Type, f.Data, f.LastID, c.typ, c.data, r.Result.ID)
			}
		})
	}

	t.Run("json array", func(t *testing.T) {
		r := post(t, "/publish", "application/json", `[{"topic":"pf","data":"one"},{"topic":"pf2","event":"e","data":"two","retry":250}]`)
		if r.Status != http.StatusOK || !strings.HasPrefix(r.Body, "[") {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		for _, want := range []string{"one", "two"} {
			if f := nextEvent(t, s); f.Data != want {
				t.Fatalf("got %q, want %q", f.Data, want)
			}
		}
	})
	t.Run("per-event retry", func(t *testing.T) {
		publishForm(t, "/publish", url.Values{"topic": {"pf"}, "data": {"r"}, "retry": {"4321"}})
		for {
			f, err := s.Next(wait)
			if err != nil {
				t.Fatal(err)
			}
			if f.Kind == ssetest.KindRetry {
				if f.Retry != 4321 {
					t.Fatalf("retry %d", f.Retry)
				}
				return
			}
		}
	})
}

// TestPublishRefusals checks every refusal of the spec: its status, its
// JSON error, and that nothing was published (the ids of two accepted
// events around each refusal are consecutive).
func TestPublishRefusals(t *testing.T) {
	startCaddy(t, "", `sse_publish /publish {
		max_size 4KiB
	}`)
	hub := findHub(t, "default")
	tooMany := url.Values{"data": {"x"}}
	for i := range 101 {
		tooMany.Add("topic", fmt.Sprint("t", i))
	}
	type refusal struct {
		name, method, path, ctype, body string
		status                          int
		errContains                     string
	}
	form := "application/x-www-form-urlencoded"
	cases := []refusal{
		{"event with LF", "POST", "/publish", form, "topic=a&event=a%0Ab&data=x", 400, "CR, LF or NUL"},
		{"event with CR", "POST", "/publish", form, "topic=a&event=a%0Db&data=x", 400, "CR, LF or NUL"},
		{"event with NUL", "POST", "/publish", form, "topic=a&event=a%00b&data=x", 400, "CR, LF or NUL"},
		{"json event with LF", "POST", "/publish", "application/json", `{"topic":"a","event":"a\nb"}`, 400, "CR, LF or NUL"},
		{"raw event with LF", "POST", "/publish?topic=a&event=a%0Ab", "text/plain", "x", 400, "CR, LF or NUL"},
		{"empty topic", "POST", "/publish", form, "topic=&data=x", 400, "topic is empty"},
		{"topic with TAB", "POST", "/publish", form, "topic=a%09b&data=x", 400, "control character"},
		{"topic with DEL", "POST", "/publish", form, "topic=a%7Fb&data=x", 400, "control character"},
		{"topic with C1 control", "POST", "/publish", form, "topic=a%C2%85b&data=x", 400, "control character"},
		{"topic not UTF-8", "POST", "/publish", form, "topic=a%FFb&data=x", 400, "not valid UTF-8"},
		{"topic too long", "POST", "/publish", form, "topic=" + strings.Repeat("x", 1025) + "&data=x", 400, "longer than 1024 bytes"},
		{"json topic too long", "POST", "/publish", "application/json", `{"topic":"` + strings.Repeat("é", 513) + `"}`, 400, "longer than 1024 bytes"},
		{"json topic not a string", "POST", "/publish", "application/json", `{"topic":5}`, 400, "topic must be"},
		{"101 topics", "POST", "/publish", form, tooMany.Encode(), 400, "at most 100"},
		{"retry negative", "POST", "/publish", form, "topic=a&retry=-1", 400, "retry"},
		{"retry not a number", "POST", "/publish", form, "topic=a&retry=soon", 400, "retry"},
		{"retry fraction", "POST", "/publish", form, "topic=a&retry=1.5", 400, "retry"},
		{"json retry fraction", "POST", "/publish", "application/json", `{"topic":"a","retry":1.5}`, 400, "retry"},
		{"json retry string", "POST", "/publish", "application/json", `{"topic":"a","retry":"100"}`, 400, "retry"},
		{"json retry negative", "POST", "/publish", "application/json", `{"topic":"a","retry":-5}`, 400, "retry"},
		{"malformed json", "POST", "/publish", "application/json", `{"topic":"a",`, 400, "malformed JSON"},
		{"json trailing data", "POST", "/publish", "application/json", `{"topic":"a"} {}`, 400, "malformed JSON"},
		{"json unknown field", "POST", "/publish", "application/json", `{"topics":["a"]}`, 400, "unknown field"},
		{"json empty array", "POST", "/publish", "application/json", `[]`, 400, "no event"},
		{"json array with one bad event", "POST", "/publish", "application/json", `[{"topic":"a"},{"topic":"a","event":"x\ny"}]`, 400, "event 1"},
		{"raw data not UTF-8", "POST", "/publish?topic=a", "application/octet-stream", "\xff\xfe", 400, "not valid UTF-8"},
		{"form data not UTF-8", "POST", "/publish", form, "topic=a&data=%FF", 400, "not valid UTF-8"},
		{"json body not UTF-8", "POST", "/publish", "application/json", "{\"topic\":\"a\",\"data\":\"\xff\"}", 400, "not valid UTF-8"},
		{"form id", "POST", "/publish", form, "topic=a&id=5&data=x", 400, "ids are assigned by the hub"},
		{"form bad escape", "POST", "/publish", form, "topic=a&data=%zz", 400, "invalid URL escape"},
		{"form bad escape in another field", "POST", "/publish", form, "topic=a&note=%zz&data=x", 400, "invalid URL escape"},
		{"form semicolon separator", "POST", "/publish", form, "topic=a;data=x", 400, "semicolon"},
		{"form bad escape in the query", "POST", "/publish?x=%zz", form, "topic=a&data=x", 400, "invalid URL escape"},
		{"json id", "POST", "/publish", "application/json", `{"topic":"a","id":"5"}`, 400, "ids are assigned by the hub"},
		{"raw id in query", "POST", "/publish?topic=a&id=5", "text/plain", "x", 400, "ids are assigned by the hub"},
		{"form unknown field", "POST", "/publish", form, "topic=a&message=hi", 400, `form field "message" is not accepted; the fields are topic, data, event (or type) and retry`},
		{"form bare text", "POST", "/publish", form, "hello world", 400, "Content-Type: text/plain"},
		{"form that is JSON", "POST", "/publish", form, `{"topic":"a","data":"x"}`, 400, "send it with Content-Type: application/json"},
		{"raw with data in the query", "POST", "/publish?topic=a&data=x", "text/plain", "x", 400, "the body of a request sent as text/plain is the data"},
		{"raw without type with data in the query", "POST", "/publish?topic=a&data=x", "", "x", 400, "without a Content-Type is the data"},
		{"retry 0", "POST", "/publish", form, "topic=a&retry=0", 400, "from 100 to 86400000"},
		{"retry max int64", "POST", "/publish", form, "topic=a&retry=9223372036854775807", 400, "from 100 to 86400000"},
		{"json retry over 24 h", "POST", "/publish", "application/json", `{"topic":"a","retry":86400001}`, 400, "from 100 to 86400000"},
		{"query retry 0", "POST", "/publish?topic=a&retry=0", "text/plain", "x", 400, "from 100 to 86400000"},
		{"json null", "POST", "/publish", "application/json", `null`, 400, "null"},
		{"json empty topic array", "POST", "/publish", "application/json", `{"topic":[],"data":"x"}`, 400, "topic is an empty array"},
		{"json array with null", "POST", "/publish", "application/json", `[{"topic":"a"},null]`, 400, "event 1 is null"},
		{"json array of 1001", "POST", "/publish", "application/json", jsonArray(1001, "{}"), 400, "more than 1000 events"},
		{"over max_size raw", "POST", "/publish?topic=a", "text/plain", strings.Repeat("x", 4097), 413, "larger than"},
		{"over max_size json", "POST", "/publish", "application/json", `{"data":"` + strings.Repeat("x", 4100) + `"}`, 413, "larger than"},
		{"GET", "GET", "/publish", "", "", 405, "method GET"},
		{"PUT", "PUT", "/publish", form, "topic=a", 405, "method PUT"},
	}
	prev := publishTo(t, "before", "a")
	before := hub.Stats().Published
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, testBase+c.path, strings.NewReader(c.body))
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			r := do(t, req)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d (%s)", r.Status, c.status, r.Body)
			}
			if r.Header.Get("Content-Type") != "application/json" || !strings.Contains(r.Error, c.errContains) {
				t.Fatalf("error %q (%s), want one containing %q", r.Error, r.Header.Get("Content-Type"), c.errContains)
			}
			if c.status == 405 && r.Header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q", r.Header.Get("Allow"))
			}
			next := publishTo(t, "after", "a")
			if seqOf(next.ID) != seqOf(prev.ID)+1 {
				t.Fatalf("something was published: ids %s then %s", prev.ID, next.ID)
			}
			prev = next
		})
	}
	if got := hub.Stats().Published - before; got != uint64(len(cases)) {
		t.Fatalf("%d events published, want only the %d markers", got, len(cases))
	}
}

func TestSubscribeRefusals(t *testing.T) {
	startCaddy(t, "", `sse /events {
		max_topics 3
	}`)
	cases := []struct {
		name, method, path string
		status             int
		errContains        string
	}{
		{"too many topics", "GET", "/events?topic=a&topic=b&topic=c&topic=d", 400, "at most 3"},
		{"empty topic", "GET", "/events?topic=", 400, "topic is empty"},
		{"control character", "GET", "/events?topic=a%0Ab", 400, "control character"},
		{"not UTF-8", "GET", "/events?topic=%FF", 400, "not valid UTF-8"},
		{"too long", "GET", "/events?topic=" + strings.Repeat("y", 1025), 400, "longer than"},
		{"POST", "POST", "/events", 405, "method POST"},
		{"HEAD", "HEAD", "/events", 405, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, testBase+c.path, nil)
			r := do(t, req)
			if r.Status != c.status || !strings.Contains(r.Error, c.errContains) {
				t.Fatalf("got %d %q, want %d with %q", r.Status, r.Body, c.status, c.errContains)
			}
			if c.method != "HEAD" && r.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("Content-Type %q", r.Header.Get("Content-Type"))
			}
			if c.status == 405 && r.Header.Get("Allow") != "GET" {
				t.Fatalf("Allow %q", r.Header.Get("Allow"))
			}
		})
	}
	if n := findHub(t, "default").Stats().Subscribers; n != 0 {
		t.Fatalf("%d subscribers after refusals", n)
	}
}

// TestSubscribeWithBodyIsRefused: a subscription that announces a body (a
// length, or chunks) is refused with 400 at once, before any of its body
// arrives, and the connection is closed after the answer: net/http would
// otherwise read the body before answering, for as long as the client
// takes to send it. A GET with an empty body is a subscription as usual.
func TestSubscribeWithBodyIsRefused(t *testing.T) {
	startCaddy(t, "", `sse /events`)
	get := func(announce string) (*http.Response, *bufio.Reader) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("localhost:%d", testHTTP), wait)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(wait))
		fmt.Fprintf(conn, "GET /events?topic=body HTTP/1.1\r\nHost: localhost:%d\r\n%s\r\n\r\n", testHTTP, announce)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp, br
	}
	for _, announce := range []string{"Content-Length: 100000", "Transfer-Encoding: chunked"} {
		t.Run(announce, func(t *testing.T) {
			resp, br := get(announce)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "no body") ||
				resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("the connection stayed open after the refusal: %v", err)
			}
		})
	}
	if resp, _ := get("Content-Length: 0"); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("a GET with Content-Length 0: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if n := findHub(t, "default").Stats().Subscribers; n != 1 {
		t.Fatalf("%d subscribers, want the one without a body", n)
	}
}

func TestTopicTemplates(t *testing.T) {
	startCaddy(t, "", `sse /mine {
		topic user/{http.request.header.X-User} news
	}
	sse_publish /publish
	sse_publish /notify {
		topic user/{http.request.uri.query.user}
	}`)
	client := ssetest.NewClient()
	bob := openStream(t, client, "/mine?topic=user/alice", http.Header{"X-User": {"bob"}})
	anon := openStream(t, client, "/mine", nil) // only "news"

	r := post(t, "/notify?user=bob", "text/plain", "for bob")
	if r.Status != 200 || r.Result.Topics[0] != "user/bob" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	publishTo(t, "for alice", "user/alice")
	publishTo(t, "for everyone", "news")
	if f := nextEvent(t, bob); f.Data != "for bob" {
		t.Fatalf("bob got %q", f.Data)
	}
	if f := nextEvent(t, bob); f.Data != "for everyone" {
		t.Fatalf("bob got %q (the query topic must be ignored)", f.Data)
	}
	if f := nextEvent(t, anon); f.Data != "for everyone" {
		t.Fatalf("anonymous got %q", f.Data)
	}
	// a template whose placeholder is empty gives no topic
	r = post(t, "/notify", "text/plain", "for nobody")
	if r.Status != 400 || !strings.Contains(r.Error, "no topic") {
		t.Fatalf("publish without user: %d %s", r.Status, r.Body)
	}

	startCaddy(t, "", `sse /mine {
		topic user/{http.request.header.X-User}
	}`)
	req, _ := http.NewRequest("GET", testBase+"/mine", nil)
	if r := do(t, req); r.Status != 403 || !strings.Contains(r.Error, "no topic") {
		t.Fatalf("subscribe without user: %d %s", r.Status, r.Body)
	}
}

func TestMaxSubscribers(t *testing.T) {
	// heartbeat 1s: the sweeper's probe notices a closed client of a
	// connection taken over within a third of it (hijack runs)
	startCaddy(t, "", `sse /events {
		max_subscribers 2
		heartbeat 1s
	}`)
	hub := findHub(t, "default")
	refusedBefore := hub.counters.disconnects[endCapacity].Load()
	client := ssetest.NewClient()
	a := openStream(t, client, "/events?topic=cap", nil)
	openStream(t, client, "/events?topic=cap", nil)

	over := openStream(t, client, "/events?topic=cap", nil)
	frames, err := over.ReadAll(wait)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || frames[0].Kind != ssetest.KindRetry || frames[0].Retry < 5000 ||
		frames[1].Kind != ssetest.KindComment || !strings.Contains(frames[1].Comment, "limit") {
		t.Fatalf("over capacity: %+v", frames)
	}
	if n := hub.counters.disconnects[endCapacity].Load() - refusedBefore; n != 1 {
		t.Fatalf("capacity refusals counted: %d", n)
	}
	// a slot frees: the next client gets in
	a.Close()
	eventually(t, "the closed stream leaves the hub", func() bool { return hub.Stats().Subscribers == 1 })
	s := openStream(t, client, "/events?topic=cap", nil)
	f, err := s.Next(wait)
	if err != nil || f.Kind != ssetest.KindRetry || f.Retry >= 5000 {
		t.Fatalf("after a slot freed: %+v %v", f, err)
	}
	if f, err := s.Next(wait); err != nil || f.Kind != ssetest.KindID {
		t.Fatalf("after a slot freed: %+v %v", f, err)
	}
}

func TestCORS(t *testing.T) {
	startCaddy(t, "", `sse /events {
		cors_origins https://app.example.com
	}
	sse /open {
		cors_origins *
	}
	sse_publish /publish {
		cors_origins https://admin.example.com
	}`)
	client := ssetest.NewClient()
	s := openStream(t, client, "/events?topic=cors", http.Header{"Origin": {"https://app.example.com"}})
	h := s.Resp.Header
	if h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("allowed origin: %v", h)
	}
	if !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
		t.Fatalf("Vary %v", h.Values("Vary"))
	}
	s = openStream(t, client, "/open?topic=cors", http.Header{"Origin": {"https://anyone.example"}})
	if s.Resp.Header.Get("Access-Control-Allow-Origin") != "*" || s.Resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("wildcard: %v", s.Resp.Header)
	}
	// no Origin, or the server's own: no CORS needed
	s = openStream(t, client, "/events?topic=cors", http.Header{"Origin": {testBase}})
	if s.Resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("same origin: %v", s.Resp.Header)
	}

	req, _ := http.NewRequest("GET", testBase+"/events?topic=cors", nil)
	req.Header.Set("Origin", "https://evil.example.com")
	if r := do(t, req); r.Status != 403 || !strings.Contains(r.Error, "evil.example.com") {
		t.Fatalf("disallowed origin: %d %s", r.Status, r.Body)
	}

	pre, _ := http.NewRequest("OPTIONS", testBase+"/events", nil)
	pre.Header.Set("Origin", "https://app.example.com")
	pre.Header.Set("Access-Control-Request-Method", "GET")
	pre.Header.Set("Access-Control-Request-Headers", "last-event-id, cache-control")
	resp, err := http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-Id") ||
		resp.Header.Get("Access-Control-Allow-Methods") != "GET" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	pre.Header.Set("Origin", "https://evil.example.com")
	if r := do(t, pre); r.Status != 403 {
		t.Fatalf("disallowed preflight: %d", r.Status)
	}

	pub, _ := http.NewRequest("POST", testBase+"/publish?topic=cors", strings.NewReader("x"))
	pub.Header.Set("Origin", "https://admin.example.com")
	if r := do(t, pub); r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "https://admin.example.com" {
		t.Fatalf("cross-origin publish: %d %v", r.Status, r.Header)
	}
	pub, _ = http.NewRequest("POST", testBase+"/publish?topic=cors", strings.NewReader("x"))
	pub.Header.Set("Origin", "https://app.example.com")
	if r := do(t, pub); r.Status != 403 {
		t.Fatalf("publish from a subscriber-only origin: %d", r.Status)
	}
	pub, _ = http.NewRequest("DELETE", testBase+"/publish", nil)
	if r := do(t, pub); r.Status != 405 || r.Header.Get("Allow") != "POST, OPTIONS" {
		t.Fatalf("405 with CORS: %d %q", r.Status, r.Header.Get("Allow"))
	}
}
