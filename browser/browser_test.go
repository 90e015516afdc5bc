//go:build unix

package browser

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestOpenBeforeAnyEvent checks that EventSource.onopen fires before any
// event exists and long before the first heartbeat, so the response
// headers are flushed at once, and that an event published once onopen
// fired reaches the page.
func TestOpenBeforeAnyEvent(t *testing.T) {
	t.Parallel() // a Caddy, ports and a Chromium of its own
	openBeforeAnyEvent(t, plain, 0)
}

func openBeforeAnyEvent(t *testing.T, e *env, n int) {
	p := e.ports(n)
	base := e.base(p)
	startCaddy(t, p, e.caddyfile(p, "", e.site(t, p, `
	sse /events {
		heartbeat 1m
	}
	sse_publish /publish`)))
	pg := e.browser(t).openHarness(base)

	src := pg.open("/events?topic=quiet", sourceOptions{})
	es := pg.waitOpen(src, 1)
	if got := only(es, src, "event"); len(got) != 0 {
		t.Fatalf("events before any was published:\n%s", dump(got))
	}
	id := publishData(t, base+"/publish", "quiet", "first")
	got := pg.waitEvents(src, 1)
	if got[0].Data != "first" || got[0].ID != id || got[0].Type != "message" {
		t.Fatalf("got %v, want the message %s with data %q", got[0], id, "first")
	}
	e.checkProtocol(t, pg.chromium, base)
}

// TestEventTypesAndData publishes events of several types with awkward
// data and checks that the browser's EventSource hands each to the right
// listener, with its id and its data exactly as published (CR LF and CR
// in data arrive as LF, as the protocol has it).
func TestEventTypesAndData(t *testing.T) {
	t.Parallel() // Caddys, ports and Chromiums of its own
	t.Run("net/http", func(t *testing.T) { t.Parallel(); eventTypesAndData(t, plain, 1, "sse /events") })
	// the same through a connection taken over: our own chunk framing
	t.Run("hijack", func(t *testing.T) { t.Parallel(); eventTypesAndData(t, plain, 11, "sse /events {\n\t\thijack\n\t}") })
}

func eventTypesAndData(t *testing.T, e *env, n int, sse string) {
	p := e.ports(n)
	base := e.base(p)
	startCaddy(t, p, e.caddyfile(p, "", e.site(t, p, `
	`+sse+`
	sse_publish /publish`)))
	pg := e.browser(t).openHarness(base)

	cases := []struct {
		name string
		ev   event
		want string // the data the page should get, if not ev.Data
	}{
		{name: "plain", ev: event{Data: "plain"}},
		{name: "typed", ev: event{Event: "greeting", Data: "hello"}},
		{name: "multi-line", ev: event{Event: "update", Data: "line one\nline two\nline three"}},
		{name: "leading spaces", ev: event{Data: "   three leading spaces"}},
		{name: "empty", ev: event{Data: ""}},
		{name: "non-ASCII", ev: event{Event: "update", Data: "héllo wörld — 日本語 · emoji 🎉"}},
		{name: "trailing newline", ev: event{Data: "trailing newline\n"}},
		{name: "blank lines", ev: event{Data: "\n\nbetween blank lines\n\n"}},
		{name: "CR LF and CR", ev: event{Data: "a\r\nb\rc"}, want: "a\nb\nc"},
		{name: "field-like lines", ev: event{Event: "greeting", Data: ": not a comment\nid: not an id\nevent: not a type\nretry: 1"}},
		{name: "not line breaks", ev: event{Data: "U+2028\u2028U+0085\u0085NUL\x00end"}},
		{name: "non-ASCII type", ev: event{Event: "ünïcödé-type", Data: "x"}},
		{name: "large", ev: event{Data: strings.Repeat("0123456789abcdef", 4096) + "\nend"}},
	}
	var events []event
	for _, c := range cases {
		c.ev.Topic = "kinds"
		events = append(events, c.ev)
	}
	src := pg.open("/events?topic=kinds", sourceOptions{
		Types: []string{"message", "greeting", "update", "ünïcödé-type"},
	})
	pg.waitOpen(src, 1)
	ids := publish(t, base+"/publish", events...)

	// Every event reaches its listener; events without a type reach
	// onmessage as well, and typed events do not.
	es := pg.waitFor(fmt.Sprintf("%d events reached the listeners", len(cases)), func(es []entry) bool {
		return len(via(only(es, src, "event"), "listener")) >= len(cases)
	})
	listened := via(only(es, src, "event"), "listener")
	var wantOnMessage []string
	for i, c := range cases {
		want := c.ev.Data
		if c.want != "" {
			want = c.want
		}
		wantType := c.ev.Event
		if wantType == "" {
			wantType = "message"
			wantOnMessage = append(wantOnMessage, ids[i])
		}
		got := listened[i]
		if got.ID != ids[i] || got.Type != wantType || got.Data != want || got.Origin != base {
			t.Errorf("%s: got type %q id %q origin %q data %.80q; want type %q id %q origin %q data %.80q",
				c.name, got.Type, got.ID, got.Origin, got.Data, wantType, ids[i], base, want)
		}
	}
	if len(listened) != len(cases) {
		t.Errorf("%d events reached the listeners, want %d:\n%s", len(listened), len(cases), dump(listened))
	}
	var gotOnMessage []string
	for _, e := range via(only(es, src, "event"), "onmessage") {
		gotOnMessage = append(gotOnMessage, e.ID)
	}
	if !slices.Equal(gotOnMessage, wantOnMessage) {
		t.Errorf("onmessage got %v, want the untyped events %v", gotOnMessage, wantOnMessage)
	}
	e.checkProtocol(t, pg.chromium, base)
}

// via returns the event entries received through via (onmessage or
// listener).
func via(es []entry, via string) []entry {
	var out []entry
	for _, e := range es {
		if e.Via == via {
			out = append(out, e)
		}
	}
	return out
}
