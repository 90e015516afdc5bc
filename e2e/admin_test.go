package e2e

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// adminHub is the JSON of a hub in GET /sse/hubs.
type adminHub struct {
	Transport        string            `json:"transport"`
	Subscribers      int               `json:"subscribers"`
	SubscribedTopics int               `json:"subscribed_topics"`
	Connections      uint64            `json:"connections"`
	Published        uint64            `json:"events_published"`
	Delivered        uint64            `json:"events_delivered"`
	Replayed         uint64            `json:"events_replayed"`
	Disconnects      map[string]uint64 `json:"disconnects"`
	Refusals         map[string]uint64 `json:"refusals"`
	History          transport.Stats   `json:"history"`
}

// TestAdminHubs: GET /sse/hubs lists every hub of the running config with
// its figures, GET /sse/hubs/<name> shows one; unknown hubs and paths are
// 404s and other methods 405s, all with JSON errors; a reload that adds a
// hub shows it.
func TestAdminHubs(t *testing.T) {
	t.Parallel()
	global := `sse {
		hub chat {
			history 2
		}
	}`
	site := `sse /events {
		hub chat
	}
	sse_publish /publish {
		hub chat
	}`
	srv := opsStart(t, 2401, 8401, global, site)
	s := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/events?topic=room&topic=lobby", nil)
	var wantBytes int
	var last opsPublished
	for i := range 3 {
		data := fmt.Sprint("message ", i)
		last = opsPublish(t, srv.base+"/publish", url.Values{"topic": {"room"}, "data": {data}}.Encode())
		if i > 0 { // history 2: the first is evicted
			wantBytes += opsEventSize(last.ID, "room", data)
		}
		s.EventT(t, opsWait)
	}

	var hubs map[string]adminHub
	opsEventually(t, "the hub list shows the three events delivered", func() bool {
		r := opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs"), "", "")
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /sse/hubs: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
		}
		hubs = nil
		opsDecode(t, r.body, &hubs)
		return hubs["chat"].Delivered == 3
	})
	if len(hubs) != 2 {
		t.Fatalf("hubs %v, want chat and default", hubs)
	}
	chat := hubs["chat"]
	if chat.Transport != "memory" || chat.Subscribers != 1 || chat.SubscribedTopics != 2 || chat.Connections != 1 ||
		chat.Published != 3 || chat.Replayed != 0 || chat.History.Topics != 1 || chat.History.Events != 2 ||
		chat.History.Bytes != int64(wantBytes) || len(chat.Disconnects) != 10 || len(chat.Refusals) != 3 {
		t.Errorf("chat: %+v", chat)
	}
	if d := hubs["default"]; d.Transport != "memory" || d.Published != 0 || d.Subscribers != 0 {
		t.Errorf("default: %+v", d)
	}

	r := opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs/chat"), "", "")
	var one adminHub
	opsDecode(t, r.body, &one)
	if r.status != http.StatusOK || one.Published != 3 || one.History.Events != 2 || one.Subscribers != 1 {
		t.Errorf("GET /sse/hubs/chat: %d %s", r.status, r.body)
	}

	refusals := []struct {
		method, path string
		status       int
		allow, msg   string
	}{
		{"GET", "/sse/hubs/nope", 404, "", `no hub "nope"`},
		{"POST", "/sse/hubs/nope/publish", 404, "", `no hub "nope"`},
		{"GET", "/sse/what", 404, "", "no admin endpoint"},
		{"GET", "/sse/hubs/chat/subscribe", 404, "", "no admin endpoint"},
		{"POST", "/sse/hubs", 405, "GET", "method POST"},
		{"DELETE", "/sse/hubs/chat", 405, "GET", "method DELETE"},
		{"GET", "/sse/hubs/chat/publish", 405, "POST", "method GET"},
		{"PUT", "/sse/hubs/chat/publish", 405, "POST", "method PUT"},
	}
	for _, c := range refusals {
		r := opsDo(t, c.method, srv.AdminURL(c.path), "", "")
		if r.status != c.status || r.header.Get("Allow") != c.allow || !strings.Contains(opsError(t, r), c.msg) {
			t.Errorf("%s %s: %d Allow %q %s; want %d Allow %q and an error with %q",
				c.method, c.path, r.status, r.header.Get("Allow"), r.body, c.status, c.allow, c.msg)
		}
	}

	// a reload that adds a hub: the endpoints follow the running config
	srv.reload(t, strings.Replace(global, "hub chat {", "hub news {\n\t\t}\n\t\thub chat {", 1), site)
	opsEventually(t, "the new hub is listed", func() bool {
		hubs = nil
		opsDecode(t, opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs"), "", "").body, &hubs)
		_, ok := hubs["news"]
		return ok
	})
	if c := hubs["chat"]; c.Published != 3 || c.Connections != 1 {
		t.Errorf("chat after the reload: %+v", c)
	}
}

// TestAdminPublish: POST /sse/hubs/<name>/publish accepts the bodies of
// sse_publish and its events reach the subscribers of sse routes, with the
// same answer.
func TestAdminPublish(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2402, 8402, `sse {
		hub chat
	}`, `sse /events
	sse /chat/events {
		hub chat
	}`)
	s := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/events?topic=t1&topic=t2", nil)
	chat := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/chat/events?topic=room", nil)

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("topic", "t1")
	_ = mw.WriteField("data", "multipart")
	_ = mw.Close()

	cases := []struct {
		name, path, ctype, body string
		stream                  *ssetest.Stream
		topics                  []string
		typ, data               string
	}{
		{"form", "/sse/hubs/default/publish", "application/x-www-form-urlencoded", "topic=t1&event=greet&data=hello", s, []string{"t1"}, "greet", "hello"},
		{"form to two topics, delivered once", "/sse/hubs/default/publish", "application/x-www-form-urlencoded", "topic=t1&topic=t2&data=both", s, []string{"t1", "t2"}, "message", "both"},
		{"multipart", "/sse/hubs/default/publish", mw.FormDataContentType(), mp.String(), s, []string{"t1"}, "message", "multipart"},
		{"json", "/sse/hubs/default/publish", "application/json", `{"topic":"t2","event":"j","data":{"n": 1}}`, s, []string{"t2"}, "j", `{"n":1}`},
		{"raw", "/sse/hubs/default/publish?topic=t1&event=raw", "text/plain", "line 1\nline 2", s, []string{"t1"}, "raw", "line 1\nline 2"},
		{"another hub", "/sse/hubs/chat/publish", "application/json", `{"topic":"room","data":"in chat"}`, chat, []string{"room"}, "message", "in chat"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := opsDo(t, http.MethodPost, srv.AdminURL(c.path), c.ctype, c.body)
			if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s", r.status, r.body)
			}
			var p opsPublished
			opsDecode(t, r.body, &p)
			if p.ID == "" || p.Subscribers != 1 || strings.Join(p.Topics, ",") != strings.Join(c.topics, ",") {
				t.Fatalf("answer %s", r.body)
			}
			f := c.stream.EventT(t, opsWait)
			if f.LastID != p.ID || f.Type != c.typ || f.Data != c.data {
				t.Fatalf("got %s %s %q, want %s %s %q", f.LastID, f.Type, f.Data, p.ID, c.typ, c.data)
			}
		})
	}

	t.Run("json array", func(t *testing.T) {
		r := opsDo(t, http.MethodPost, srv.AdminURL("/sse/hubs/default/publish"), "application/json",
			`[{"topic":"t1","data":"first"},{"topic":"t2","data":"second"}]`)
		var ps []opsPublished
		opsDecode(t, r.body, &ps)
		if r.status != http.StatusOK || len(ps) != 2 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		for i, want := range []string{"first", "second"} {
			if f := s.EventT(t, opsWait); f.Data != want || f.LastID != ps[i].ID {
				t.Fatalf("got %s %q, want %s %q", f.LastID, f.Data, ps[i].ID, want)
			}
		}
	})
}

// TestAdminPublishRefusals: the admin publish endpoint refuses what
// sse_publish refuses, with the same statuses and JSON errors, and
// publishes nothing then (the ids of the accepted events around each
// refusal follow each other).
func TestAdminPublishRefusals(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2403, 8403, "", `sse /events`)
	publishURL := srv.AdminURL("/sse/hubs/default/publish")
	form := "application/x-www-form-urlencoded"
	tooMany := url.Values{"data": {"x"}}
	for i := range 101 {
		tooMany.Add("topic", fmt.Sprint("t", i))
	}
	cases := []struct {
		name, method, query, ctype, body string
		status                           int
		errContains                      string
	}{
		{"event with LF", "POST", "", form, "topic=a&event=a%0Ab&data=x", 400, "CR, LF or NUL"},
		{"json event with CR", "POST", "", "application/json", `{"topic":"a","event":"a\rb"}`, 400, "CR, LF or NUL"},
		{"raw event with NUL", "POST", "?topic=a&event=a%00b", "text/plain", "x", 400, "CR, LF or NUL"},
		{"empty topic", "POST", "", form, "topic=&data=x", 400, "topic is empty"},
		{"topic with TAB", "POST", "", form, "topic=a%09b&data=x", 400, "control character"},
		{"topic not UTF-8", "POST", "", form, "topic=a%FFb&data=x", 400, "not valid UTF-8"},
		{"topic too long", "POST", "", "application/json", `{"topic":"` + strings.Repeat("x", 1025) + `"}`, 400, "longer than 1024 bytes"},
		{"101 topics", "POST", "", form, tooMany.Encode(), 400, "at most 100"},
		{"retry negative", "POST", "", form, "topic=a&retry=-1", 400, "retry"},
		{"json retry fraction", "POST", "", "application/json", `{"topic":"a","retry":1.5}`, 400, "retry"},
		{"malformed json", "POST", "", "application/json", `{"topic":"a",`, 400, "malformed JSON"},
		{"json unknown field", "POST", "", "application/json", `{"topics":["a"]}`, 400, "unknown field"},
		{"json array with one bad event", "POST", "", "application/json", `[{"topic":"a"},{"topic":"a\u0007"}]`, 400, "event 1"},
		{"data not UTF-8", "POST", "?topic=a", "application/octet-stream", "\xff\xfe", 400, "not valid UTF-8"},
		{"form id", "POST", "", form, "topic=a&id=5&data=x", 400, "ids are assigned by the hub"},
		{"json id", "POST", "", "application/json", `{"topic":"a","id":"5"}`, 400, "ids are assigned by the hub"},
		{"over 1 MiB", "POST", "?topic=a", "text/plain", strings.Repeat("x", 1<<20+1), 413, "larger than the 1048576 bytes"},
		{"GET", "GET", "", "", "", 405, "method GET"},
		{"PATCH", "PATCH", "", form, "topic=a", 405, "method PATCH"},
	}
	marker := func() opsPublished { return opsPublish(t, publishURL, "topic=a&data=marker") }
	prev := marker()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := opsDo(t, c.method, publishURL+c.query, c.ctype, c.body)
			if r.status != c.status || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s %s, want %d", r.status, r.header.Get("Content-Type"), r.body, c.status)
			}
			if msg := opsError(t, r); !strings.Contains(msg, c.errContains) {
				t.Fatalf("error %q, want one containing %q", msg, c.errContains)
			}
			if c.status == http.StatusMethodNotAllowed && r.header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q", r.header.Get("Allow"))
			}
			next := marker()
			if opsSeq(t, next.ID) != opsSeq(t, prev.ID)+1 {
				t.Fatalf("something was published: ids %s then %s", prev.ID, next.ID)
			}
			prev = next
		})
	}

	// the figures agree: only the markers were published
	var hub adminHub
	opsDecode(t, opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs/default"), "", "").body, &hub)
	if hub.Published != uint64(len(cases)+1) {
		t.Fatalf("%d events published, want the %d markers", hub.Published, len(cases)+1)
	}
}

// opsSeq returns the sequence number of an event id.
func opsSeq(t *testing.T, id string) uint64 {
	t.Helper()
	_, seq, ok := transport.ParseID(id)
	if !ok {
		t.Fatalf("malformed id %q", id)
	}
	return seq
}
