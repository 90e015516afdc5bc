//go:build linux

package main

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// event is a dispatched event as the tests see it.
type event struct{ typ, data string }

// collect parses body fed in the given pieces and returns the events.
func collect(t *testing.T, chunked bool, pieces []string) ([]event, *streamParser) {
	t.Helper()
	var got []event
	p := newStreamParser(chunked, func(typ, data []byte) {
		got = append(got, event{string(typ), string(data)})
	})
	for _, piece := range pieces {
		if err := p.feed([]byte(piece)); err != nil {
			t.Fatalf("feed(%q): %v", piece, err)
		}
	}
	return got, p
}

// chunk frames s as HTTP/1.1 chunks of the given sizes (the last one
// takes the rest), with the terminating chunk when last is set.
func chunk(s string, sizes []int, last bool) string {
	var b strings.Builder
	for i := 0; len(s) > 0; i++ {
		n := len(s)
		if i < len(sizes) && sizes[i] < n {
			n = sizes[i]
		}
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
		s = s[n:]
	}
	if last {
		b.WriteString("0\r\n\r\n")
	}
	return b.String()
}

// splitEvery cuts s into pieces of n bytes.
func splitEvery(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

const sampleStream = "retry: 3000\n\nid: e-0\n\n: heartbeat\n" +
	"id: e-1\ndata: one\n\n" +
	"id: e-2\nevent: update\ndata: two\ndata: lines\n\n" +
	"data:no space\r\n\r\n" +
	"data:  two spaces\r\r" +
	"event: message\ndata\n\n" +
	"field without value\nid: x\n\n"

var sampleEvents = []event{
	{"", "one"},
	{"update", "two\nlines"},
	{"", "no space"},
	{"", " two spaces"},
	{"", ""},
}

func TestParserWholeStream(t *testing.T) {
	got, p := collect(t, false, []string{sampleStream})
	if !slices.Equal(got, sampleEvents) {
		t.Fatalf("events:\n got %q\nwant %q", got, sampleEvents)
	}
	if p.comments != 1 {
		t.Errorf("comments = %d, want 1", p.comments)
	}
}

// TestParserEveryCut feeds the stream, chunked in pieces of every size,
// in reads of every size: chunk boundaries and reads cut lines, CRLFs,
// chunk sizes and chunk trailers everywhere.
func TestParserEveryCut(t *testing.T) {
	for chunkSize := 1; chunkSize <= 24; chunkSize++ {
		sizes := make([]int, 1000)
		for i := range sizes {
			sizes[i] = chunkSize
		}
		body := chunk(sampleStream, sizes, true)
		for readSize := 1; readSize <= 40; readSize++ {
			got, p := collect(t, true, splitEvery(body, readSize))
			if !slices.Equal(got, sampleEvents) {
				t.Fatalf("chunks of %d, reads of %d:\n got %q\nwant %q", chunkSize, readSize, got, sampleEvents)
			}
			if !p.done() {
				t.Fatalf("chunks of %d, reads of %d: the last chunk was not seen", chunkSize, readSize)
			}
		}
	}
}

func TestParserRandomChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var stream strings.Builder
	var want []event
	for i := range 300 {
		data := fmt.Sprintf("ssb:1:%d:%d:%s", i, r.IntN(1e9), strings.Repeat("x", r.IntN(200)))
		fmt.Fprintf(&stream, "id: e-%d\ndata: %s\n\n", i, data)
		want = append(want, event{"", data})
		if r.IntN(5) == 0 {
			stream.WriteString(":\n")
		}
	}
	for range 50 {
		sizes := make([]int, 5000)
		for i := range sizes {
			sizes[i] = 1 + r.IntN(300)
		}
		body := chunk(stream.String(), sizes, false)
		var pieces []string
		for len(body) > 0 {
			n := min(len(body), 1+r.IntN(500))
			pieces = append(pieces, body[:n])
			body = body[n:]
		}
		got, _ := collect(t, true, pieces)
		if !slices.Equal(got, want) {
			t.Fatalf("got %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
		}
	}
}

func firstDiff(a, b []event) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestParserChunkExtensionsAndTrailers(t *testing.T) {
	body := "5;name=value\r\ndata:\r\n4\r\n x\n\n\r\n0\r\nTrailer: yes\r\n\r\n"
	got, p := collect(t, true, splitEvery(body, 1))
	want := []event{{"", "x"}}
	if !slices.Equal(got, want) || !p.done() {
		t.Fatalf("got %q (done %v), want %q", got, p.done(), want)
	}
	if err := p.feed([]byte("1\r\n")); err == nil {
		t.Error("bytes after the last chunk were accepted")
	}
}

func TestParserBadChunkSize(t *testing.T) {
	p := newStreamParser(true, nil)
	if err := p.feed([]byte("zz\r\n")); err == nil {
		t.Fatal("a chunk size of zz was accepted")
	}
}

func TestParserLongLineIsCut(t *testing.T) {
	long := strings.Repeat("y", maxLine+100)
	got, _ := collect(t, false, splitEvery("data: "+long+"\n\ndata: ok\n\n", 1000))
	if len(got) != 2 || got[1].data != "ok" || len(got[0].data) > maxEventData {
		t.Fatalf("got %d events, the first %d bytes long", len(got), len(got[0].data))
	}
}

func TestHeadParsing(t *testing.T) {
	for _, tc := range []struct {
		head    string
		chunked bool
		err     string
	}{
		{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", true, ""},
		{"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\n", false, ""},
		{"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n", false, "503"},
		{"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", false, "text/html"},
		{"SSH-2.0\r\n\r\n", false, "not an HTTP"},
	} {
		chunked, err := parseHead([]byte(tc.head))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.head, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one with %q", tc.head, err, tc.err)
		case chunked != tc.chunked:
			t.Errorf("%q: chunked %v, want %v", tc.head, chunked, tc.chunked)
		}
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, 64, 1000} {
		b := appendPayload(nil, 3, 123456, 987654321, size)
		if size >= 30 && len(b) != size {
			t.Errorf("size %d: payload of %d bytes", size, len(b))
		}
		wrapped := append([]byte(`{"data":"`), b...)
		wrapped = append(wrapped, `"}`...)
		for _, data := range [][]byte{b, wrapped} {
			run, seq, sent, ok := parsePayload(data)
			if !ok || run != 3 || seq != 123456 || sent != 987654321 {
				t.Errorf("size %d: parsed %q as %d %d %d %v", size, data, run, seq, sent, ok)
			}
		}
	}
	for _, bad := range []string{"", "hello", "ssb:", "ssb:1:2", "ssb:1:2:x:", "ssb::2:3:", "ssb:1:99999999999999999999:3:"} {
		if _, _, _, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestTemplates(t *testing.T) {
	form := parseTemplate("topic={topic}&data={data}&n={seq}&x={other}")
	got := string(form.expand(nil, escapeForm, "a b/c", []byte("ssb:1:2:3:x"), 7))
	if want := "topic=a+b%2Fc&data=ssb%3A1%3A2%3A3%3Ax&n=7&x={other}"; got != want {
		t.Errorf("form: %s, want %s", got, want)
	}
	js := parseTemplate(`{"topic":"{topic}","data":"{data}"}`)
	got = string(js.expand(nil, escapeJSON, `t"0`, []byte("a\\b\nc\x01"), 0))
	if want := `{"topic":"t\"0","data":"a\\b\nc\u0001"}`; got != want {
		t.Errorf("json: %s, want %s", got, want)
	}
	if _, err := escaperFor("auto", "application/json; charset=utf-8"); err != nil {
		t.Error(err)
	}
	if _, err := escaperFor("yaml", ""); err == nil {
		t.Error("escaper yaml accepted")
	}
}

func TestSubTarget(t *testing.T) {
	tg, err := newSubTarget("http://127.0.0.1:8080/events?topic={topic}&x=%2F", []string{"Authorization: Bearer x"}, protoH1, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := string(tg.requestFor("t3"))
	want := "GET /events?topic=t3&x=%2F HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
	if !strings.HasPrefix(req, want) || !strings.Contains(req, "\r\nAuthorization: Bearer x\r\n\r\n") {
		t.Errorf("request:\n%s", req)
	}
	if tg.addr.Port != 8080 {
		t.Errorf("port %d", tg.addr.Port)
	}
	conf := &tls.Config{}
	for _, tc := range []struct {
		url, proto string
		ok         bool
	}{
		{"https://127.0.0.1/", protoH1, false},
		{"http://127.0.0.1/", protoH2, false},
		{"ftp://127.0.0.1/", protoH1, false},
		{"https:///events", protoH2, false},
	} {
		if _, err := newSubTarget(tc.url, nil, tc.proto, conf); (err == nil) != tc.ok {
			t.Errorf("%s over %s: error %v", tc.url, tc.proto, err)
		}
	}
	for proto, alpn := range map[string]string{protoH1TLS: "http/1.1", protoH2: "h2", protoH3: "h3"} {
		tg, err := newSubTarget("https://localhost/events?topic={topic}", []string{"X-A: b"}, proto, conf)
		if err != nil {
			t.Fatal(err)
		}
		if tg.tls.ServerName != "localhost" || len(tg.tls.NextProtos) != 1 || tg.tls.NextProtos[0] != alpn {
			t.Errorf("%s: TLS %q %q", proto, tg.tls.ServerName, tg.tls.NextProtos)
		}
		if tg.pathFor("t1") != "/events?topic=t1" || len(tg.fields) != 1 || tg.fields[0] != [2]string{"x-a", "b"} {
			t.Errorf("%s: path %q, fields %q", proto, tg.pathFor("t1"), tg.fields)
		}
		port := 0
		if proto == protoH3 {
			port = tg.udpAddr.Port
		} else {
			port = tg.addr.Port
		}
		if port != 443 {
			t.Errorf("%s: port %d, want 443", proto, port)
		}
	}
	if conf.ServerName != "" || conf.NextProtos != nil {
		t.Error("the shared TLS settings were changed")
	}
}
