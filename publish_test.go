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
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/memory"
)

// request builds a publish request to the test site with headers.
func request(t *testing.T, method, path, contentType, body string, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, testBase+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// checkNothingPublished checks that the hub's newest event is still head.
func checkNothingPublished(t *testing.T, hub *Hub, head uint64) {
	t.Helper()
	if now := hub.Stats().History.Head; now != head {
		t.Fatalf("%d events were published", now-head)
	}
}

// TestHeaderRefusals checks the refusals that a request's headers decide:
// a foreign Origin (CSRF) and a malformed Idempotency-Key. Each is a JSON
// error and publishes nothing.
func TestHeaderRefusals(t *testing.T) {
	startCaddy(t, "", basicSite)
	hub := findHub(t, "default")
	form := "application/x-www-form-urlencoded"
	cases := []struct {
		name        string
		header      http.Header
		status      int
		errContains string
	}{
		{"foreign origin", http.Header{"Origin": {"https://evil.example"}}, 403,
			"origin https://evil.example may not publish here: it is neither this site's origin nor one of the route's cors_origins"},
		{"null origin", http.Header{"Origin": {"null"}}, 403, "origin null may not publish"},
		{"other port", http.Header{"Origin": {fmt.Sprintf("http://localhost:%d", testHTTP+1)}}, 403, "may not publish"},
		{"other host, same port", http.Header{"Origin": {fmt.Sprintf("http://127.0.0.1:%d", testHTTP)}}, 403, "may not publish"},
		{"empty key", http.Header{"Idempotency-Key": {""}}, 400, "1 to 255 characters"},
		{"key too long", http.Header{"Idempotency-Key": {strings.Repeat("k", 256)}}, 400, "1 to 255 characters, not 256"},
		{"key not ASCII", http.Header{"Idempotency-Key": {"clé"}}, 400, "printable ASCII"},
		{"key with a control character", http.Header{"Idempotency-Key": {"a\tb"}}, 400, "printable ASCII"},
		{"two keys", http.Header{"Idempotency-Key": {"a", "b"}}, 400, "send one"},
		{"badly quoted key", http.Header{"Idempotency-Key": {`"a"b"`}}, 400, "quoted string"},
	}
	head := publishTo(t, "before", "h").ID
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := hub.Stats().History.Head
			r := do(t, request(t, "POST", "/publish", form, "topic=h&data=x", c.header))
			if r.Status != c.status || r.Header.Get("Content-Type") != "application/json" || !strings.Contains(r.Error, c.errContains) {
				t.Fatalf("%d %s (%s), want %d with %q", r.Status, r.Body, r.Header.Get("Content-Type"), c.status, c.errContains)
			}
			checkNothingPublished(t, hub, before)
		})
	}
	if next := publishTo(t, "after", "h").ID; seqOf(next) != seqOf(head)+1 {
		t.Fatalf("something was published: %s then %s", head, next)
	}
}

// TestCrossSite refuses requests from other sites' pages on routes
// without cors_origins, for both handlers, and accepts the site's own
// pages (the demo publishes from its page), also behind a proxy that
// terminates TLS.
func TestCrossSite(t *testing.T) {
	startCaddy(t, "", `sse /events
	sse_publish /publish
	sse_publish /shared {
		cors_origins https://app.example.com
	}`)
	hub := findHub(t, "default")
	own := testBase
	form := "application/x-www-form-urlencoded"
	s := openStream(t, ssetest.NewClient(), "/events?topic=xs", http.Header{"Origin": {own}})

	for _, origin := range []string{own, strings.ToUpper(own), strings.Replace(own, "http://", "https://", 1)} {
		r := do(t, request(t, "POST", "/publish", form, "topic=xs&data=same+site", http.Header{"Origin": {origin}}))
		if r.Status != 200 {
			t.Fatalf("publish from %s: %d %s", origin, r.Status, r.Body)
		}
		if f := nextEvent(t, s); f.Data != "same site" {
			t.Fatalf("got %q", f.Data)
		}
	}

	for _, c := range []struct{ path, ctype, body string }{
		{"/publish", form, "topic=xs&data=forged"},
		{"/publish?topic=xs", "text/plain", "forged"},
		{"/publish", "application/json", `{"topic":"xs","data":"forged"}`},
		{"/shared", form, "topic=xs&data=forged"},
	} {
		before := hub.Stats().History.Head
		r := do(t, request(t, "POST", c.path, c.ctype, c.body, http.Header{"Origin": {"https://evil.example"}}))
		if r.Status != 403 || !strings.Contains(r.Error, "evil.example may not publish") {
			t.Fatalf("POST %s (%s) from another site: %d %s", c.path, c.ctype, r.Status, r.Body)
		}
		checkNothingPublished(t, hub, before)
	}
	r := do(t, request(t, "POST", "/shared", form, "topic=xs&data=allowed", http.Header{"Origin": {"https://app.example.com"}}))
	if r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("publish from an allowed origin: %d %s %v", r.Status, r.Body, r.Header)
	}
	if f := nextEvent(t, s); f.Data != "allowed" {
		t.Fatalf("got %q", f.Data)
	}

	subscribers := hub.Stats().Subscribers
	for _, origin := range []string{"https://evil.example", "null"} {
		r := do(t, request(t, "GET", "/events?topic=xs", "", "", http.Header{"Origin": {origin}}))
		if r.Status != 403 || !strings.Contains(r.Error, "may not subscribe here") {
			t.Fatalf("subscribe from %s: %d %s", origin, r.Status, r.Body)
		}
	}
	if n := hub.Stats().Subscribers; n != subscribers {
		t.Fatalf("%d subscribers after refusals, want %d", n, subscribers)
	}
}

// TestHugeArrayRefused sends the 1 MiB array of 340,000 events that once
// took 5 s and an answer of 21 MB: it is refused, and nothing published.
func TestHugeArrayRefused(t *testing.T) {
	startCaddy(t, "", basicSite)
	hub := findHub(t, "default")
	head := hub.Stats().History.Head
	body := jsonArray(340_000, "{}")
	if len(body) > DefaultMaxSize {
		t.Fatalf("the body is %d bytes", len(body))
	}
	r := post(t, "/publish", "application/json", body)
	if r.Status != 400 || r.Error != "the array holds more than 1000 events; publish at most 1000 per request" {
		t.Fatalf("%d %.200s", r.Status, r.Body)
	}
	checkNothingPublished(t, hub, head)
}

// idempotentPost sends a publish request with an Idempotency-Key.
func idempotentPost(t *testing.T, url, key, contentType, body string) publishResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return do(t, req)
}

// TestIdempotencyKey publishes with Idempotency-Key: a repetition gets the
// first answer and publishes nothing, another request with the key is a
// 422, and a repetition while the first is in flight a 409.
func TestIdempotencyKey(t *testing.T) {
	startCaddy(t, "", basicSite)
	hub := findHub(t, "default")
	s := openStream(t, ssetest.NewClient(), "/events?topic=idem&topic=idem2", nil)
	form := "application/x-www-form-urlencoded"
	pub := testBase + "/publish"
	key := fmt.Sprintf("key-%d", time.Now().UnixNano())

	// checkNext checks that the subscriber's next event is a marker
	// published now: nothing reached it in between.
	checkNext := func(t *testing.T) {
		t.Helper()
		marker := publishTo(t, "marker", "idem")
		if f := nextEvent(t, s); f.LastID != marker.ID || f.Data != "marker" {
			t.Fatalf("got %s %q before the marker %s", f.LastID, f.Data, marker.ID)
		}
	}

	first := idempotentPost(t, pub, key, form, "topic=idem&topic=idem2&event=e&data=once")
	if first.Status != 200 || first.Result.Subscribers != 1 {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	if f := nextEvent(t, s); f.Data != "once" || f.LastID != first.Result.ID {
		t.Fatalf("got %q %s", f.Data, f.LastID)
	}

	t.Run("repeat", func(t *testing.T) {
		head, published := hub.Stats().History.Head, hub.Stats().Published
		for _, body := range []struct{ ctype, body string }{
			{form, "topic=idem&topic=idem2&event=e&data=once"},
			{form, "data=once&topic=idem&type=e&topic=idem2&topic=idem"}, // the same event, otherwise spelled
			{"application/json", `{"topic":["idem","idem2"],"event":"e","data":"once"}`},
		} {
			r := idempotentPost(t, pub, key, body.ctype, body.body)
			if r.Status != 200 || r.Body != first.Body {
				t.Fatalf("repeat as %s: %d %s, want the first answer %s", body.ctype, r.Status, r.Body, first.Body)
			}
		}
		r := idempotentPost(t, pub, `"`+key+`"`, form, "topic=idem&topic=idem2&event=e&data=once")
		if r.Status != 200 || r.Body != first.Body {
			t.Fatalf("repeat with a quoted key: %d %s", r.Status, r.Body)
		}
		checkNothingPublished(t, hub, head)
		if n := hub.Stats().Published; n != published {
			t.Fatalf("events_published went from %d to %d", published, n)
		}
		checkNext(t)
	})

	t.Run("another request", func(t *testing.T) {
		head := hub.Stats().History.Head
		for _, body := range []string{
			"topic=idem&topic=idem2&event=e&data=twice",
			"topic=idem&event=e&data=once",
			"topic=idem&topic=idem2&data=once",
			"topic=idem&topic=idem2&event=e&data=once&retry=1000",
		} {
			r := idempotentPost(t, pub, key, form, body)
			if r.Status != 422 || !strings.Contains(r.Error, "Idempotency-Key was used for another request") {
				t.Fatalf("%s: %d %s", body, r.Status, r.Body)
			}
		}
		checkNothingPublished(t, hub, head)
		checkNext(t)
	})

	t.Run("refused request keeps the key free", func(t *testing.T) {
		k := key + "-refused"
		if r := idempotentPost(t, pub, k, form, "topic=idem&retry=0"); r.Status != 400 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if r := idempotentPost(t, pub, k, form, "topic=idem&data=fixed"); r.Status != 200 {
			t.Fatalf("the corrected request: %d %s", r.Status, r.Body)
		}
		if f := nextEvent(t, s); f.Data != "fixed" {
			t.Fatalf("got %q", f.Data)
		}
	})

	t.Run("array", func(t *testing.T) {
		k := key + "-array"
		body := `[{"topic":"idem","data":"a1"},{"topic":"idem2","data":"a2"}]`
		r1 := idempotentPost(t, pub, k, "application/json", body)
		if r1.Status != 200 || !strings.HasPrefix(r1.Body, "[") {
			t.Fatalf("%d %s", r1.Status, r1.Body)
		}
		nextEvent(t, s)
		nextEvent(t, s)
		head := hub.Stats().History.Head
		if r2 := idempotentPost(t, pub, k, "application/json", body); r2.Status != 200 || r2.Body != r1.Body {
			t.Fatalf("repeat: %d %s, want %s", r2.Status, r2.Body, r1.Body)
		}
		if r3 := idempotentPost(t, pub, k, "application/json", `[{"topic":"idem","data":"a1"}]`); r3.Status != 422 {
			t.Fatalf("a shorter array: %d %s", r3.Status, r3.Body)
		}
		checkNothingPublished(t, hub, head)
		checkNext(t)
	})

	t.Run("in flight", func(t *testing.T) {
		k := key + "-flight"
		body := "topic=idem&data=in+flight"
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("localhost:%d", testHTTP), wait)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(wait))
		br := bufio.NewReader(conn)
		// The headers, with Expect: 100-continue: the server says
		// "100 Continue" when the handler starts reading the body, which it
		// does once it holds the key.
		_, err = fmt.Fprintf(conn, "POST /publish HTTP/1.1\r\nHost: localhost:%d\r\nContent-Type: %s\r\n"+
			"Content-Length: %d\r\nIdempotency-Key: %s\r\nExpect: 100-continue\r\n\r\n", testHTTP, form, len(body), k)
		if err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
			t.Fatalf("want 100 Continue, got %q %v", line, err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != "\r\n" {
			t.Fatalf("after 100 Continue: %q %v", line, err)
		}
		if _, err := conn.Write([]byte(body[:5])); err != nil {
			t.Fatal(err)
		}
		head := hub.Stats().History.Head
		for _, b := range []string{body, "topic=idem&data=other"} {
			r := idempotentPost(t, pub, k, form, b)
			if r.Status != 409 || !strings.Contains(r.Error, "still in progress") {
				t.Fatalf("while the first is in flight: %d %s", r.Status, r.Body)
			}
		}
		checkNothingPublished(t, hub, head)
		if _, err := conn.Write([]byte(body[5:])); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var res publishResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 {
			t.Fatalf("the first: %d %v", resp.StatusCode, err)
		}
		resp.Body.Close()
		if f := nextEvent(t, s); f.Data != "in flight" || f.LastID != res.ID {
			t.Fatalf("got %q %s", f.Data, f.LastID)
		}
		if r := idempotentPost(t, pub, k, form, body); r.Status != 200 || r.Result.ID != res.ID {
			t.Fatalf("repeat once answered: %d %s", r.Status, r.Body)
		}
		checkNext(t)
	})

	t.Run("without a key", func(t *testing.T) {
		a := idempotentPost(t, pub, "", form, "topic=idem&data=twice")
		b := idempotentPost(t, pub, "", form, "topic=idem&data=twice")
		if a.Status != 200 || b.Status != 200 || seqOf(b.Result.ID) != seqOf(a.Result.ID)+1 {
			t.Fatalf("%s then %s", a.Body, b.Body)
		}
		for range 2 {
			if f := nextEvent(t, s); f.Data != "twice" {
				t.Fatalf("got %q", f.Data)
			}
		}
	})

	t.Run("admin API", func(t *testing.T) {
		admin := fmt.Sprintf("http://localhost:%d/sse/hubs/default/publish", testAdmin)
		k := key + "-admin"
		r1 := idempotentPost(t, admin, k, form, "topic=idem&data=admin")
		if r1.Status != 200 {
			t.Fatalf("%d %s", r1.Status, r1.Body)
		}
		nextEvent(t, s)
		head := hub.Stats().History.Head
		if r2 := idempotentPost(t, admin, k, form, "topic=idem&data=admin"); r2.Status != 200 || r2.Body != r1.Body {
			t.Fatalf("repeat: %d %s, want %s", r2.Status, r2.Body, r1.Body)
		}
		// keys are per hub, whichever way the request came in
		if r3 := idempotentPost(t, pub, k, form, "topic=idem&data=admin"); r3.Status != 200 || r3.Body != r1.Body {
			t.Fatalf("repeat through sse_publish: %d %s, want %s", r3.Status, r3.Body, r1.Body)
		}
		if r4 := idempotentPost(t, admin, k, form, "topic=idem&data=other"); r4.Status != 422 {
			t.Fatalf("another request: %d %s", r4.Status, r4.Body)
		}
		checkNothingPublished(t, hub, head)
		checkNext(t)
	})
}

// TestAdminErrorsAreReadable checks that the admin API's errors are JSON
// whose text is not HTML-escaped.
func TestAdminErrorsAreReadable(t *testing.T) {
	startCaddy(t, "", basicSite)
	admin := fmt.Sprintf("http://localhost:%d", testAdmin)
	req, _ := http.NewRequest("GET", admin+"/sse/nothing", nil)
	status, header, body := ssetest.DoT(t, req)
	if status != 404 || header.Get("Content-Type") != "application/json" ||
		!strings.Contains(string(body), "GET /sse/hubs/<name>") || strings.Contains(string(body), `\u003c`) {
		t.Fatalf("%d %s %s", status, header.Get("Content-Type"), body)
	}
	r := idempotentPost(t, admin+"/sse/hubs/default/publish", "", "application/x-www-form-urlencoded", "topic=a<b>&event=x%0Ay")
	if r.Status != 400 || !strings.Contains(r.Body, `"event type \"x\\ny\" contains CR, LF or NUL"`) {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	req, _ = http.NewRequest("GET", admin+"/sse/hubs/nope%3Cx%3E", nil)
	if status, _, body := ssetest.DoT(t, req); status != 404 || !strings.Contains(string(body), `no hub \"nope<x>\"`) {
		t.Fatalf("%d %s", status, body)
	}
}

// TestPublishFailureIsLogged checks that a publish the hub cannot store is
// answered 503 with a JSON error and logged at error level with its
// cause, without the payload; through the admin API, the failure is a
// caddy.APIError for Caddy's admin server to log and answer.
func TestPublishFailureIsLogged(t *testing.T) {
	hub, err := newHub("broken", new(memory.Transport), transport.Limits{Events: 10, MaxBytes: 1 << 20}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	_ = hub.Destruct() // the transport is closed: every publish fails
	core, logs := observer.New(zapcore.DebugLevel)
	p := &Publish{Hub: "broken", MaxSize: DefaultMaxSize, hub: hub, logger: zap.New(core)}

	r := httptest.NewRequest("POST", "/publish", strings.NewReader("topic=t&data=secret-payload"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	if err := p.ServeHTTP(w, r, nil); err != nil {
		t.Fatal(err)
	}
	var eb errorBody
	if w.Code != 503 || json.Unmarshal(w.Body.Bytes(), &eb) != nil || !strings.Contains(eb.Error, "transport closed") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zapcore.ErrorLevel {
		t.Fatalf("log: %+v", entries)
	}
	fields := entries[0].ContextMap()
	if !strings.Contains(fmt.Sprint(fields["error"]), "transport closed") || fields["hub"] != "broken" || fields["status"] != int64(503) {
		t.Fatalf("log fields: %v", fields)
	}
	if strings.Contains(fmt.Sprint(entries[0].Message, fields), "secret-payload") {
		t.Fatalf("the payload was logged: %v", fields)
	}

	// a refusal (4xx) is not logged as an error
	r = httptest.NewRequest("POST", "/publish", strings.NewReader("topic=t&retry=0"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	_ = p.ServeHTTP(w, r, nil)
	if w.Code != 400 || logs.Len() != 1 {
		t.Fatalf("%d, %d log entries", w.Code, logs.Len())
	}

	r = httptest.NewRequest("POST", "/sse/hubs/broken/publish", strings.NewReader("topic=t&data=secret-payload"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	err = adminPublish(w, r, hub, nil)
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != 503 || !errors.Is(apiErr.Err, transport.ErrClosed) ||
		!strings.Contains(apiErr.Message, "transport closed") || w.Body.Len() != 0 {
		t.Fatalf("admin: %#v, answered %q", err, w.Body)
	}
}

// TestPublishErrorStatus checks the answer to each error of Hub.Publish.
func TestPublishErrorStatus(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		logged bool
	}{
		{context.Canceled, 400, false},
		{transport.ErrKeyMismatch, 422, false},
		{transport.ErrKeyInFlight, 409, false},
		{transport.ErrClosed, 503, true},
		{fmt.Errorf("redis: %w", transport.ErrUnavailable), 503, true},
	} {
		e := publishError(fmt.Errorf("publishing to hub %q: %w", "h", c.err))
		if e.status != c.status || (e.cause != nil) != c.logged || e.msg == "" {
			t.Errorf("%v: %+v", c.err, e)
		}
	}
}

// heapAfterGC returns the live heap of this process, Caddy's included.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestPublishedEventsKeepNoRequestAlive publishes large requests to a hub
// whose history is bounded to 1 MiB and checks that the heap of the
// process (the test's Caddy runs in it) did not grow by the bodies: no
// stored event, topic or idempotency record keeps its request's body
// alive, and topic names count in history_max_bytes. (Once, 300 forms of
// 1 MB grew the heap by 300 MB, and 2,000 events with 100 topics of 1,000
// bytes by 229 MB.) The sizes are what tells a leak from noise under the
// race detector, which makes every megabyte slow.
func TestPublishedEventsKeepNoRequestAlive(t *testing.T) {
	startCaddy(t, `sse {
		hub mem {
			history_max_bytes 1MiB
		}
	}`, `sse_publish /mem {
		hub mem
		max_size 4MiB
	}`)
	hub := findHub(t, "mem")
	// The forms, multipart and topics subtests publish 11-12 MB each,
	// which the heap would keep if events kept their requests alive
	// (twice maxGrowth); what it keeps in fact is the history's 1 MiB and
	// some noise (0-1 MB in the runs of issue 21, where they published
	// twice as much).
	const maxGrowth = 6 << 20
	check := func(t *testing.T, what string, before uint64, published int) {
		t.Helper()
		st := hub.Stats().History
		after := heapAfterGC()
		t.Logf("%s: %d MB published; heap %d MB -> %d MB; history %d events, %d bytes",
			what, published>>20, before>>20, after>>20, st.Events, st.Bytes)
		if st.Bytes > 1<<20 {
			t.Fatalf("the history holds %d bytes, over its 1 MiB", st.Bytes)
		}
		if after > before && after-before > maxGrowth {
			t.Fatalf("the heap grew by %d MB after publishing %d MB", (after-before)>>20, published>>20)
		}
	}
	data := strings.Repeat("x", 1_000_000)
	client := &http.Client{}
	send := func(t *testing.T, ctype, body, key string) {
		t.Helper()
		req, _ := http.NewRequest("POST", testBase+"/mem", strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%d", resp.StatusCode)
		}
	}
	// 100 topics of 1,000 bytes
	topics := make([]string, 100)
	for i := range topics {
		topics[i] = fmt.Sprintf("%04d", i) + strings.Repeat("t", 996)
	}

	t.Run("forms", func(t *testing.T) {
		before := heapAfterGC()
		n := 0
		for i := range 12 {
			// a topic of its own: the history remembers idle topics
			body := "topic=" + fmt.Sprint("form-", i) + "&topic=forms&data=" + data
			send(t, "application/x-www-form-urlencoded", body, fmt.Sprint("mem-form-", i))
			n += len(body)
		}
		check(t, "12 forms of 1 MB", before, n)
	})

	t.Run("multipart", func(t *testing.T) {
		before := heapAfterGC()
		n := 0
		for i := range 12 {
			ctype, body := multipartBody(t, part{name: "topic", value: fmt.Sprint("multipart-", i)},
				part{name: "data", value: data, file: "data.txt"})
			send(t, ctype, body, "")
			n += len(body)
		}
		check(t, "12 multipart forms with a file of 1 MB", before, n)
	})

	t.Run("topics", func(t *testing.T) {
		body := url.Values{"topic": topics, "data": {"small"}}.Encode()
		before := heapAfterGC()
		n := 0
		for range 120 {
			send(t, "application/x-www-form-urlencoded", body, "")
			n += len(body)
		}
		check(t, "120 events with 100 topics of 1,000 bytes", before, n)
	})

	t.Run("json topics", func(t *testing.T) {
		ev, _ := json.Marshal(map[string]any{"topic": topics, "data": "small"})
		body := jsonArray(20, string(ev))
		before := heapAfterGC()
		for range 2 {
			send(t, "application/json", body, "")
		}
		check(t, "40 JSON events with 100 topics of 1,000 bytes", before, 2*len(body))
		// the names count: the history holds few of these events
		if st := hub.Stats().History; st.Events > 10 || st.Bytes < int64(st.Events)*100_000 {
			t.Fatalf("history of %d events in %d bytes: the topic names are not counted", st.Events, st.Bytes)
		}
	})
}
