package caddysse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// streamSite has the routes of the streaming publish tests.
const streamSite = `
	sse /events
	sse_publish /publish
	sse_publish /small {
		max_size 16
	}
	sse_publish /idle {
		stream_timeout 1s
	}
	sse_publish /forced {
		topic forced/{query.room}
	}
`

const (
	sseType    = "text/event-stream"
	ndjsonType = "application/x-ndjson"
)

// streamAnswer is the decoded answer to a streaming publish.
type streamAnswer struct {
	Status   int         `json:"-"`
	Proto    string      `json:"-"`
	Header   http.Header `json:"-"`
	Body     string      `json:"-"`
	Error    string      `json:"error"`
	Count    int         `json:"count"`
	FirstID  string      `json:"first_id"`
	LastID   string      `json:"last_id"`
	Repeated int         `json:"repeated"`
}

func decodeStreamAnswer(t testing.TB, status int, header http.Header, body []byte) streamAnswer {
	t.Helper()
	a := streamAnswer{Status: status, Header: header, Body: string(body)}
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("decoding the answer %d %q: %v", status, body, err)
	}
	return a
}

// openPublish is a streaming publish in progress, its body written by
// the test as it goes (chunked: its length is not known).
type openPublish struct {
	t     *testing.T
	body  *io.PipeWriter
	done  chan streamAnswer
	start time.Time
}

// oneShotClient opens a connection for each request.
var oneShotClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// startPublish starts a streaming publish of content type ctype to url
// with client (the default one if nil).
func startPublish(t *testing.T, client *http.Client, url, ctype string, header http.Header) *openPublish {
	t.Helper()
	if client == nil {
		// a connection of its own: one kept alive could outlive the test
		// and carry a later test's request to a config being replaced
		client = oneShotClient
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", ctype)
	op := &openPublish{t: t, body: pw, done: make(chan streamAnswer, 1), start: time.Now()}
	go func() {
		defer cancel()
		resp, err := client.Do(req)
		if err != nil {
			op.done <- streamAnswer{Status: -1, Error: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		a := streamAnswer{Status: resp.StatusCode, Proto: resp.Proto, Header: resp.Header, Body: string(b)}
		if err == nil {
			err = json.Unmarshal(b, &a)
		}
		if err != nil {
			a.Error = fmt.Sprintf("reading the answer %q: %v", b, err)
		}
		op.done <- a
	}()
	t.Cleanup(func() { pw.CloseWithError(errors.New("the test is over")) })
	return op
}

// send writes s to the body.
func (op *openPublish) send(s string) {
	op.t.Helper()
	if _, err := io.WriteString(op.body, s); err != nil {
		op.t.Fatalf("writing %q: %v", s, err)
	}
}

// end ends the body and returns the answer.
func (op *openPublish) end() streamAnswer {
	op.t.Helper()
	op.body.Close()
	return op.answer()
}

// answer waits for the answer.
func (op *openPublish) answer() streamAnswer {
	op.t.Helper()
	select {
	case a := <-op.done:
		return a
	case <-time.After(2 * wait):
		op.t.Fatal("no answer to the streaming publish")
	}
	return streamAnswer{}
}

// postStream publishes a whole body as a stream (chunked) and returns the
// answer.
func postStream(t *testing.T, url, ctype, body string, header http.Header) streamAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, io.MultiReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", ctype)
	status, h, b := ssetest.DoT(t, req)
	return decodeStreamAnswer(t, status, h, b)
}

// expectEvent fails the test unless the stream's next event has type typ
// and data, and returns its id.
func expectEvent(t *testing.T, s *ssetest.Stream, typ, data string) string {
	t.Helper()
	f := nextEvent(t, s)
	if f.Type != typ || f.Data != data {
		t.Fatalf("got the event %s %q %q, want %q %q", f.LastID, f.Type, f.Data, typ, data)
	}
	return f.LastID
}

// expectNothingElse checks that nothing reaches s before a marker
// published now to topic.
func expectNothingElse(t *testing.T, s *ssetest.Stream, topic string) {
	t.Helper()
	marker := publishTo(t, "marker", topic)
	if f := nextEvent(t, s); f.LastID != marker.ID {
		t.Fatalf("got %s %q before the marker %s", f.LastID, f.Data, marker.ID)
	}
}

// TestStreamPublishesEachEventAtOnce publishes a text/event-stream whose
// events are written one by one, each awaited at a subscriber before the
// next is written: each is published when its block is complete, not when
// the body ends. The answer counts them and gives the first and last ids.
func TestStreamPublishesEachEventAtOnce(t *testing.T) {
	startCaddy(t, "", streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=chat/42", nil)
	op := startPublish(t, nil, testBase+"/publish?topic=chat/42&event=token", sseType, nil)
	var ids []string
	// each event written in pieces, with the line endings of the format
	pieces := [][]string{
		{"\xEF\xBB", "\xBFdata: Hel", "lo\n", "\n"},
		{"data: ,\r", "\n\r\n"},
		{": a comment\rid: 99\rdata: wor", "ld\r", "\r"},
		{"event: done\n", "data: line 1\ndata: line 2\nretry: 1000\n\n"},
	}
	want := []struct{ typ, data string }{{"token", "Hello"}, {"token", ","}, {"token", "world"}, {"done", "line 1\nline 2"}}
	for i, p := range pieces {
		for _, piece := range p {
			op.send(piece)
		}
		ids = append(ids, expectEvent(t, s, want[i].typ, want[i].data))
	}
	op.send("event: ignored\n\ndata: never, the body ends before its blank line\n")
	a := op.end()
	if a.Status != 200 || a.Count != 4 || a.FirstID != ids[0] || a.LastID != ids[3] || a.Repeated != 0 || a.Error != "" {
		t.Fatalf("the answer: %s; want count 4, first_id %s, last_id %s", a.Body, ids[0], ids[3])
	}
	if ct := a.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	for i := 1; i < len(ids); i++ {
		if seqOf(ids[i]) != seqOf(ids[i-1])+1 {
			t.Fatalf("ids %v are not consecutive", ids)
		}
	}
	expectNothingElse(t, s, "chat/42")
}

// TestStreamPublishNDJSON publishes an application/x-ndjson stream: the
// lines' own topics, types and retries, the query's as defaults, and a
// last line without its LF.
func TestStreamPublishNDJSON(t *testing.T) {
	startCaddy(t, "", streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=n1&topic=n2", nil)
	op := startPublish(t, nil, testBase+"/publish?topic=n1&event=tick", ndjsonType, nil)
	op.send(`{"data":"a"}` + "\n")
	first := expectEvent(t, s, "tick", "a")
	op.send("\n" + `{"topic":"n2","event":"e","data":{"k": [1, 2]}}` + "\r\n")
	expectEvent(t, s, "e", `{"k":[1,2]}`)
	op.send(`{"topic":["n1","n2"],"type":"t","data":"both"}` + "\n" + `{"data":"z"}`)
	expectEvent(t, s, "t", "both")
	a := op.end()
	last := expectEvent(t, s, "tick", "z")
	if a.Status != 200 || a.Count != 4 || a.FirstID != first || a.LastID != last {
		t.Fatalf("the answer: %d %s", a.Status, a.Body)
	}
	expectNothingElse(t, s, "n1")

	// the route's topics replace the lines' own, as for JSON bodies
	f := openStream(t, ssetest.NewClient(), "/events?topic=forced/7", nil)
	a = postStream(t, testBase+"/forced?room=7&topic=n1", ndjsonType, `{"topic":"n2","data":"x"}`+"\n", nil)
	if a.Status != 200 || a.Count != 1 {
		t.Fatalf("forced: %d %s", a.Status, a.Body)
	}
	expectEvent(t, f, "message", "x")
	expectNothingElse(t, s, "n1")
}

// TestStreamTopicsAndDefaults: without a topic, events go to "default";
// with several ?topic=, to each; the query's retry is the events'.
func TestStreamTopicsAndDefaults(t *testing.T) {
	startCaddy(t, "", streamSite)
	def := openStream(t, ssetest.NewClient(), "/events", nil)
	ab := openStream(t, ssetest.NewClient(), "/events?topic=a&topic=b", nil)
	if a := postStream(t, testBase+"/publish", sseType, "data: d\n\n", nil); a.Status != 200 || a.Count != 1 {
		t.Fatalf("%d %s", a.Status, a.Body)
	}
	expectEvent(t, def, "message", "d")
	a := postStream(t, testBase+"/publish?topic=a&topic=b&retry=2000", sseType, "data: x\n\nretry: 500\ndata: y\n\n", nil)
	if a.Status != 200 || a.Count != 2 {
		t.Fatalf("%d %s", a.Status, a.Body)
	}
	expectEvent(t, ab, "message", "x")
	expectEvent(t, ab, "message", "y")
	// the retries, on the wire: a raw read of the history
	hub := findHub(t, "default")
	rep, err := hub.transport.Replay(context.Background(), transport.ReplayQuery{Topics: []string{"a"}, Latest: 2})
	if err != nil || len(rep.Events) != 2 {
		t.Fatalf("%v %v", rep.Events, err)
	}
	if w0, w1 := string(rep.Events[0].Wire), string(rep.Events[1].Wire); !strings.Contains(w0, "retry: 2000\n") || !strings.Contains(w1, "retry: 500\n") {
		t.Fatalf("wires %q and %q: want the query's retry, then the event's own", w0, w1)
	}
	expectNothingElse(t, def, "default")
}

// TestStreamRefusals: a malformed event ends the stream with a refusal
// that names it; the events before it stay published, those after are
// not. Refusals of what the query says come before the body is read.
func TestStreamRefusals(t *testing.T) {
	startCaddy(t, "", streamSite)
	hub := findHub(t, "default")
	s := openStream(t, ssetest.NewClient(), "/events?topic=r", nil)
	const after = "data: after\n\n"
	mid := []struct {
		name, path, ctype, body string
		status, count           int
		msg                     string
	}{
		{"retry out of bounds", "/publish?topic=r", sseType, "data: 1\n\ndata: 2\n\nretry: 50\ndata: 3\n\n" + after,
			400, 2, "event 3 (line 5): retry 50 is not allowed"},
		{"data not UTF-8", "/publish?topic=r", sseType, "data: 1\n\ndata: \xc3\n\n" + after,
			400, 1, "event 2 (line 3): data is not valid UTF-8"},
		{"an event over max_size", "/small?topic=r", sseType, "data: 1\n\ndata: 0123456789abcdef0\n\n" + after,
			413, 1, "event 2 (line 3): the event's data is larger than the 16 bytes allowed (max_size)"},
		{"a line over max_size", "/small?topic=r", ndjsonType, `{"data":"1"}` + "\n" + `{"data":"0123456789abcdef"}` + "\n" + after,
			413, 1, "event 2 (line 2): the line is longer than the 16 bytes allowed (max_size)"},
		{"an invalid topic", "/publish?topic=r", ndjsonType, `{"data":"1"}` + "\n\n" + `{"topic":"a\tb","data":"2"}` + "\n",
			400, 1, `event 2 (line 3): topic "a\tb" contains the control character U+0009`},
		{"too many topics", "/publish?topic=r", ndjsonType, `{"topic":[` + strings.Repeat(`"t",`, 100) + `"t"],"data":"1"}` + "\n",
			400, 0, "event 1 (line 1): 101 topics given; at most 100 are allowed"},
		{"an event type with NUL", "/publish?topic=r", ndjsonType, `{"data":"1"}` + "\n" + `{"event":"a\u0000b","data":"2"}` + "\n",
			400, 1, `event 2 (line 2): event type "a\x00b" contains CR, LF or NUL`},
		{"an id", "/publish?topic=r", ndjsonType, `{"id":"7","data":"1"}` + "\n",
			400, 0, "event 1 (line 1): event ids are assigned by the hub"},
	}
	for _, c := range mid {
		t.Run(c.name, func(t *testing.T) {
			a := postStream(t, testBase+c.path, c.ctype, c.body, nil)
			if a.Status != c.status || a.Count != c.count || !strings.HasPrefix(a.Error, c.msg) {
				t.Fatalf("%d %s; want %d, count %d, error %q", a.Status, a.Body, c.status, c.count, c.msg)
			}
			var ids []string
			for i := range c.count {
				ids = append(ids, expectEvent(t, s, "message", fmt.Sprint(i+1)))
			}
			if c.count > 0 && (a.FirstID != ids[0] || a.LastID != ids[len(ids)-1]) {
				t.Fatalf("the answer %s names other events than %v", a.Body, ids)
			}
			expectNothingElse(t, s, "r")
		})
	}
	before := []struct{ name, query, msg string }{
		{"data in the query", "?topic=r&data=x", "the body of a text/event-stream publish holds the events: remove data from the query string"},
		{"an id in the query", "?topic=r&id=1", "event ids are assigned by the hub"},
		{"an invalid topic", "?topic=a%09b", `topic "a\tb" contains the control character U+0009`},
		{"an empty topic", "?topic=", "topic is empty"},
		{"too many topics", "?" + strings.Repeat("topic=t&", 101), "101 topics given"},
		{"a bad retry", "?topic=r&retry=5", `retry "5" is not allowed`},
		{"a bad event type", "?topic=r&event=a%00b", "contains CR, LF or NUL"},
		{"a bad query", "?topic=%zz", "reading the query"},
	}
	for _, c := range before {
		t.Run(c.name, func(t *testing.T) {
			head := hub.Stats().History.Head
			a := postStream(t, testBase+"/publish"+c.query, sseType, "data: 1\n\n", nil)
			if a.Status != 400 || !strings.Contains(a.Error, c.msg) || strings.Contains(a.Body, "count") {
				t.Fatalf("%d %s; want 400 %q, without figures", a.Status, a.Body, c.msg)
			}
			checkNothingPublished(t, hub, head)
		})
	}
	expectNothingElse(t, s, "r")
}

// TestStreamIdleTimeout: a stream that sends nothing for stream_timeout
// is ended with 408, not sooner, with its figures; one that keeps sending
// is not. stream_timeout replaces Caddy's own read_body_idle timeout.
func TestStreamIdleTimeout(t *testing.T) {
	// with Caddy's read_body_idle, which stream_timeout overrides, and
	// without, where the handler sets read deadlines itself
	t.Run("stream_timeout", func(t *testing.T) { idleTimeout(t, "") })
	t.Run("stream_timeout without read_body_idle", func(t *testing.T) {
		idleTimeout(t, "servers {\n\t\ttimeouts {\n\t\t\tread_body_idle -1s\n\t\t}\n\t}")
	})
	t.Run("longer than read_body_idle", func(t *testing.T) {
		startCaddy(t, `servers {
		timeouts {
			read_body_idle 300ms
		}
	}`, streamSite)
		s := openStream(t, ssetest.NewClient(), "/events?topic=idle", nil)
		op := startPublish(t, nil, testBase+"/idle?topic=idle", sseType, nil)
		op.send("data: 1\n\n")
		expectEvent(t, s, "message", "1")
		time.Sleep(700 * time.Millisecond) // silent for longer than read_body_idle, shorter than stream_timeout
		op.send("data: 2\n\n")
		expectEvent(t, s, "message", "2")
		if a := op.end(); a.Status != 200 || a.Count != 2 {
			t.Fatalf("%d %s", a.Status, a.Body)
		}
		// a plain request body still has the server's timeout
		conn := rawPublish(t, "/publish?topic=idle", "text/plain", "Content-Length: 10\r\n")
		if _, err := conn.Write([]byte("12345")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("a stalled plain body was published")
			}
		}
	})
}

// idleTimeout: with the global options global, a stream that sends an
// event every 250ms goes on for longer than its stream_timeout, 1s; once
// silent, it is ended after 1s (and a little more), not sooner.
func idleTimeout(t *testing.T, global string) {
	startCaddy(t, global, streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=idle", nil)
	op := startPublish(t, nil, testBase+"/idle?topic=idle", sseType, nil)
	for i := range 6 { // 1.5s in all: more than stream_timeout
		op.send(fmt.Sprintf("data: %d\n\n", i))
		expectEvent(t, s, "message", fmt.Sprint(i))
		time.Sleep(250 * time.Millisecond) // the publisher's pace: not a synchronisation
	}
	op.send(": still here\n")
	quiet := time.Now()
	a := op.answer()
	silent := time.Since(quiet)
	if a.Status != 408 || a.Count != 6 || !strings.Contains(a.Error, "nothing was received for 1s (stream_timeout)") {
		t.Fatalf("%d %s", a.Status, a.Body)
	}
	if silent < time.Second || silent > 3*time.Second {
		t.Fatalf("ended after %v of silence; want stream_timeout, 1s, and a little more", silent)
	}
	expectNothingElse(t, s, "idle")
}

// rawPublish opens a connection to the test site and sends the headers of
// a POST to path with ctype and more header lines.
func rawPublish(t *testing.T, path, ctype, more string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("localhost:%d", testHTTP), wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(3 * wait))
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost:%d\r\nContent-Type: %s\r\n%s\r\n", path, testHTTP, ctype, more); err != nil {
		t.Fatal(err)
	}
	return conn
}

// chunk frames s as one chunk of a chunked body.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// TestStreamRefusedMidwayClosesTheConnection: a stream refused before its
// body ended is answered at once, while the client still sends, with
// Connection: close (HTTP/1.1): the rest of the body cannot be told from
// a next request.
func TestStreamRefusedMidwayClosesTheConnection(t *testing.T) {
	startCaddy(t, "", streamSite)
	conn := rawPublish(t, "/publish?topic=midway", sseType, "Transfer-Encoding: chunked\r\n")
	if _, err := io.WriteString(conn, chunk("data: ok\n\nretry: 1\ndata: no\n\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !resp.Close || !strings.Contains(string(b), `"count":1`) {
		t.Fatalf("%d, close %v: %s; want 400 with Connection: close", resp.StatusCode, resp.Close, b)
	}
	// the rest of the body, and what would be another request
	_, _ = io.WriteString(conn, chunk("data: more\n\n")+"0\r\n\r\nGET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if next, err := http.ReadResponse(br, nil); err == nil {
		next.Body.Close()
		t.Fatalf("the connection served another request: %d", next.StatusCode)
	}
}

// TestStreamClientAborts: a client that goes away mid-stream has every
// complete event it sent published, even those that arrived with the end
// of the connection, and nothing of an incomplete one.
func TestStreamClientAborts(t *testing.T) {
	startCaddy(t, "", streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=abort", nil)
	for _, c := range []struct {
		name  string
		reset bool
		wait  bool // for the complete events before closing
	}{
		{"close after the events arrived", false, true},
		{"close at once", false, false},
		{"reset at once", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := rawPublish(t, "/publish?topic=abort", sseType, "Transfer-Encoding: chunked\r\n")
			body := chunk("data: one\n\ndata: t") + chunk("wo\n\n") + chunk("data: three\n\ndata: incompl") + chunk("ete\n")
			if _, err := io.WriteString(conn, body); err != nil {
				t.Fatal(err)
			}
			if c.wait {
				expectEvent(t, s, "message", "one")
				expectEvent(t, s, "message", "two")
				expectEvent(t, s, "message", "three")
			}
			if c.reset {
				_ = conn.(*net.TCPConn).SetLinger(0)
			}
			conn.Close()
			if !c.wait {
				expectEvent(t, s, "message", "one")
				expectEvent(t, s, "message", "two")
				expectEvent(t, s, "message", "three")
			}
			expectNothingElse(t, s, "abort")
		})
	}
}

// TestStreamIdempotencyKey: a stream cut after some events and sent again
// from the start with the same key publishes each event once, with
// continuous ids; the key is held while a stream is open (409), and used
// with another envelope it is a 422.
func TestStreamIdempotencyKey(t *testing.T) {
	startCaddy(t, "", streamSite)
	hub := findHub(t, "default")
	s := openStream(t, ssetest.NewClient(), "/events?topic=relay", nil)
	key := fmt.Sprintf("relay-%d", time.Now().UnixNano())
	tokens := []string{"The", " answer", " is", " forty", "-two", "."}
	events := func(n int) string {
		var b strings.Builder
		for _, tok := range tokens[:n] {
			fmt.Fprintf(&b, "event: token\ndata: %s\n\n", tok)
		}
		return b.String()
	}

	// the first attempt: three tokens, then the connection breaks
	conn := rawPublish(t, "/publish?topic=relay", sseType, "Transfer-Encoding: chunked\r\nIdempotency-Key: "+key+"\r\n")
	if _, err := io.WriteString(conn, chunk(events(3)+"event: token\ndata: for")); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tok := range tokens[:3] {
		ids = append(ids, expectEvent(t, s, "token", tok))
	}
	conn.Close()
	eventually(t, "the first attempt is over", func() bool {
		return hub.claimKey(key) // and released at once
	})
	hub.releaseKey(key)

	// the retry, from the start, sent token by token
	op := startPublish(t, nil, testBase+"/publish?topic=relay", sseType, http.Header{"Idempotency-Key": {key}})
	op.send(events(1))
	op.send(events(4)[len(events(1)):])
	ids = append(ids, expectEvent(t, s, "token", tokens[3]))
	// while it is open, the key is taken
	if a := postStream(t, testBase+"/publish?topic=relay", sseType, events(6), http.Header{"Idempotency-Key": {key}}); a.Status != 409 {
		t.Fatalf("while the retry is open: %d %s", a.Status, a.Body)
	}
	op.send(events(6)[len(events(4)):])
	a := op.end()
	for _, tok := range tokens[4:] {
		ids = append(ids, expectEvent(t, s, "token", tok))
	}
	for i := 1; i < len(ids); i++ {
		if seqOf(ids[i]) != seqOf(ids[i-1])+1 {
			t.Fatalf("ids %v are not continuous", ids)
		}
	}
	if a.Status != 200 || a.Count != 6 || a.Repeated != 3 || a.FirstID != ids[0] || a.LastID != ids[5] {
		t.Fatalf("the retry's answer: %d %s; want count 6, repeated 3, ids %s to %s", a.Status, a.Body, ids[0], ids[5])
	}
	expectNothingElse(t, s, "relay")

	// once more, whole: nothing is published again
	head := hub.Stats().History.Head
	a = postStream(t, testBase+"/publish?topic=relay", sseType, events(6), http.Header{"Idempotency-Key": {key}})
	if a.Status != 200 || a.Count != 6 || a.Repeated != 6 || a.FirstID != ids[0] || a.LastID != ids[5] {
		t.Fatalf("again: %d %s", a.Status, a.Body)
	}
	checkNothingPublished(t, hub, head)

	// the same key with another envelope, or as a plain publish
	for _, c := range []struct{ path, ctype, body string }{
		{"/publish?topic=other", sseType, events(1)},
		{"/publish?topic=relay&event=token", sseType, events(1)},
		{"/publish?topic=relay", ndjsonType, `{"event":"token","data":"The"}` + "\n"},
		{"/publish?topic=relay", "text/plain", "The"},
	} {
		a := postStream(t, testBase+c.path, c.ctype, c.body, http.Header{"Idempotency-Key": {key}})
		if a.Status != 422 || !strings.Contains(a.Error, "Idempotency-Key was used for another request") {
			t.Fatalf("%s as %s: %d %s", c.path, c.ctype, a.Status, a.Body)
		}
	}
	checkNothingPublished(t, hub, head)
	expectNothingElse(t, s, "relay")
}

// TestStreamEndsOnReload: a config reload ends the old config's streaming
// publishes at once, with 503, Retry-After and the figures, instead of
// holding the reload; a publisher can then send the rest to the new one.
func TestStreamEndsOnReload(t *testing.T) {
	startCaddy(t, "", streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=reload", nil)
	op := startPublish(t, nil, testBase+"/publish?topic=reload", sseType, nil)
	op.send("data: before\n\n")
	id := expectEvent(t, s, "message", "before")
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		startCaddy(t, "", streamSite+"\n\trespond /generation 2")
	}()
	a := op.answer()
	if a.Status != 503 || a.Header.Get("Retry-After") != "1" || a.Count != 1 || a.LastID != id ||
		!strings.Contains(a.Error, "the server is reloading or stopping") {
		t.Fatalf("%d %v %s", a.Status, a.Header, a.Body)
	}
	select {
	case <-reloaded:
	case <-time.After(wait):
		t.Fatal("the reload did not finish")
	}
	s2 := openStream(t, ssetest.NewClient(), "/events?topic=reload", http.Header{"Last-Event-ID": {id}})
	if a := postStream(t, testBase+"/publish?topic=reload", sseType, "data: after\n\n", nil); a.Status != 200 {
		t.Fatalf("after the reload: %d %s", a.Status, a.Body)
	}
	expectEvent(t, s2, "message", "after")
}

// TestStreamAdminAPI publishes a stream through the admin API.
func TestStreamAdminAPI(t *testing.T) {
	startCaddy(t, "", streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=adm", nil)
	admin := fmt.Sprintf("http://localhost:%d/sse/hubs/default/publish", testAdmin)
	op := startPublish(t, nil, admin+"?topic=adm", ndjsonType, nil)
	op.send(`{"data":"1"}` + "\n")
	first := expectEvent(t, s, "message", "1")
	op.send(`{"data":"2","event":"e"}` + "\n")
	last := expectEvent(t, s, "e", "2")
	if a := op.end(); a.Status != 200 || a.Count != 2 || a.FirstID != first || a.LastID != last {
		t.Fatalf("%d %s", a.Status, a.Body)
	}
	a := postStream(t, admin+"?topic=adm", sseType, "data: ok\n\nretry: 1\ndata: x\n\n", nil)
	if a.Status != 400 || a.Count != 1 || !strings.HasPrefix(a.Error, "event 2 (line 3): retry 1 is not allowed") {
		t.Fatalf("%d %s", a.Status, a.Body)
	}
	expectEvent(t, s, "message", "ok")
	expectNothingElse(t, s, "adm")
}

// TestStreamWithCurl publishes with curl -T - (chunked, Expect:
// 100-continue) from a pipe, event by event.
func TestStreamWithCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	startCaddy(t, "", streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=curl", nil)
	cmd := exec.Command(curl, "-sS", "--no-buffer", "-T", "-", "-X", "POST", "-H", "Content-Type: text/event-stream",
		testBase+"/publish?topic=curl")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var ids []string
	for i := range 3 {
		if _, err := fmt.Fprintf(stdin, "data: token %d\n\n", i); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, expectEvent(t, s, "message", fmt.Sprint("token ", i)))
	}
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out.String())
		}
	case <-time.After(wait):
		t.Fatal("curl did not end")
	}
	a := decodeStreamAnswer(t, 200, nil, []byte(out.String()))
	if a.Count != 3 || a.FirstID != ids[0] || a.LastID != ids[2] {
		t.Fatalf("curl printed %s", out.String())
	}
}

// TestStreamOverHTTP2 publishes a stream over an HTTP/2 request stream
// (h2c), event by event.
func TestStreamOverHTTP2(t *testing.T) {
	startCaddy(t, `servers {
		protocols h1 h2c
	}`, streamSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=h2", nil)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	defer client.CloseIdleConnections()
	op := startPublish(t, client, testBase+"/publish?topic=h2", sseType, nil)
	op.send("data: one\n\n")
	first := expectEvent(t, s, "message", "one")
	op.send("data: two\n\n")
	last := expectEvent(t, s, "message", "two")
	a := op.end()
	if a.Status != 200 || a.Proto != "HTTP/2.0" || a.Count != 2 || a.FirstID != first || a.LastID != last {
		t.Fatalf("%s %d %s", a.Proto, a.Status, a.Body)
	}
	// a refusal mid-stream reaches the client while it still sends
	op = startPublish(t, client, testBase+"/publish?topic=h2", sseType, nil)
	op.send("data: three\n\nretry: 1\n\n")
	expectEvent(t, s, "message", "three")
	if a := op.answer(); a.Status != 400 || a.Count != 1 {
		t.Fatalf("%d %s", a.Status, a.Body)
	}
}

// TestStreamMaxStreams: a route reads at most max_streams streaming
// publishes at once; one more is refused at once with 503, Retry-After
// and an error naming the option, before any of its body is read (its
// body never ends here); once a stream ends, a new one is read.
func TestStreamMaxStreams(t *testing.T) {
	startCaddy(t, "", `sse /events
	sse_publish /publish {
		max_streams 2
	}`)
	s := openStream(t, ssetest.NewClient(), "/events?topic=ms", nil)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var open []*openPublish
	for i := range 2 {
		op := startPublish(t, client, testBase+"/publish?topic=ms", sseType, nil)
		op.send(fmt.Sprintf("data: %d\n\n", i))
		expectEvent(t, s, "message", fmt.Sprint(i)) // it is being read
		open = append(open, op)
	}
	over := startPublish(t, client, testBase+"/publish?topic=ms", sseType, nil)
	a := over.answer()
	if a.Status != http.StatusServiceUnavailable || a.Header.Get("Retry-After") == "" || !strings.Contains(a.Error, "max_streams") {
		t.Fatalf("a third stream: %d, Retry-After %q, %q", a.Status, a.Header.Get("Retry-After"), a.Body)
	}
	if a := open[0].end(); a.Status != http.StatusOK || a.Count != 1 {
		t.Fatalf("the first stream: %d %s", a.Status, a.Body)
	}
	next := startPublish(t, client, testBase+"/publish?topic=ms", sseType, nil)
	next.send("data: again\n\n")
	expectEvent(t, s, "message", "again")
	if a := next.end(); a.Status != http.StatusOK || a.Count != 1 {
		t.Fatalf("a stream after one ended: %d %s", a.Status, a.Body)
	}
	if a := open[1].end(); a.Status != http.StatusOK {
		t.Fatalf("the second stream: %d %s", a.Status, a.Body)
	}
}

// TestStreamLongLineIsNotKept: a stream that sent one long line (an event
// of 900 KiB) and goes on does not keep the buffer that line needed: 20
// such open streams cost the heap far less than 20 lines.
func TestStreamLongLineIsNotKept(t *testing.T) {
	startCaddy(t, `sse {
		hub nolines {
			history 0
		}
	}`, `sse_publish /publish {
		hub nolines
	}`)
	hub := findHub(t, "nolines")
	before := heapInUse()
	published := hub.Stats().Published
	long := "data: " + strings.Repeat("l", 900<<10) + "\n\n"
	for range 20 {
		op := startPublish(t, nil, testBase+"/publish?topic=long", sseType, nil)
		op.send(long)
		op.send("data: short\n\n")
	}
	eventually(t, "the 40 events are published", func() bool { return hub.Stats().Published-published == 40 })
	perStream := (heapInUse() - before) / 20
	t.Logf("an open stream that sent a 900 KiB line holds %d KiB", perStream>>10)
	if perStream > 256<<10 {
		t.Fatalf("an open stream that sent a 900 KiB line holds %d KiB", perStream>>10)
	}
}
