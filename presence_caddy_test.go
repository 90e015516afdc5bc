package caddysse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestPresenceCaddyfile: presence on sse, presence_grace and presence_max
// in a hub block adapt to their JSON fields; bad values are refused with
// an error that names the option.
func TestPresenceCaddyfile(t *testing.T) {
	out, err := adapt(t, `{
	sse {
		hub chat {
			presence_grace 2s
			presence_max 50
		}
	}
}
:80 {
	sse {
		hub chat
		presence {http.request.header.X-User}
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"presence":"{http.request.header.X-User}"`, `"presence_grace":2000000000`, `"presence_max":50`} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, out)
		}
	}
	hub := func(opt string) string {
		return "{\n\tsse {\n\t\thub chat {\n\t\t\t" + opt + "\n\t\t}\n\t}\n}\n:80 {\n\tsse\n}"
	}
	route := func(opt string) string { return ":80 {\n\tsse {\n\t\t" + opt + "\n\t}\n}" }
	for _, c := range []struct{ name, config, want string }{
		{"presence without a placeholder", route("presence"), "wrong argument count"},
		{"presence with two", route("presence {a} {b}"), "wrong argument count"},
		{"presence not a placeholder", route("presence alice"), `presence: "alice" is not a placeholder`},
		{"presence_grace zero", hub("presence_grace 0s"), "presence_grace: \"0s\" is not a positive duration"},
		{"presence_grace negative", hub("presence_grace -1s"), "presence_grace: \"-1s\" is not a positive duration"},
		{"presence_grace without unit", hub("presence_grace 5"), "presence_grace: \"5\" has no unit"},
		{"presence_grace missing", hub("presence_grace"), "wrong argument count"},
		{"presence_max zero", hub("presence_max 0"), `presence_max: "0" is not an integer of at least 1`},
		{"presence_max word", hub("presence_max many"), `presence_max: "many" is not an integer of at least 1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := adapt(t, c.config)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	for _, c := range []struct{ name, hub, want string }{
		{"negative presence_grace", `{"presence_grace":-1}`, "presence_grace must not be negative"},
		{"negative presence_max", `{"presence_max":-1}`, "presence_max must not be negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"admin":{"listen":"localhost:%d"},"apps":{"sse":{"hubs":{"a":%s}}}}`, testAdmin, c.hub)
			caddytest.AssertLoadError(t, cfg, "json", c.want)
		})
	}
	t.Run("route presence not a placeholder in JSON", func(t *testing.T) {
		cfg := fmt.Sprintf(`{"admin":{"listen":"localhost:%d"},"apps":{"http":{"servers":{"s":{"listen":[":%d"],
			"routes":[{"handle":[{"handler":"sse","presence":"bob"}]}]}}}}}`, testAdmin, testHTTP)
		caddytest.AssertLoadError(t, cfg, "json", `presence: \"bob\" is not a placeholder`)
	})
}

// TestPresenceOverCaddy: with presence {http.request.uri.query.me}, the
// admin API counts each topic's distinct members; $presence/<topic> is
// subject to allow (403 for a topic it does not grant); publishing to a
// "$" topic is a 400.
func TestPresenceOverCaddy(t *testing.T) {
	startCaddy(t, `sse {
		hub default {
			presence_grace 100ms
		}
	}`, `sse /events {
		presence {http.request.uri.query.me}
		allow room/*
	}
	sse_publish /publish`)
	client := ssetest.NewClient()
	openStream(t, client, "/events?topic=room/1&me=alice", nil)
	openStream(t, client, "/events?topic=room/1&me=alice", nil)
	bob := openStream(t, client, "/events?topic=room/1&topic=room/2&me=bob", nil)
	openStream(t, client, "/events?topic=room/2", nil)
	w := openStream(t, client, "/events?topic=$presence/room/2", nil)
	if f := nextEvent(t, w); f.Type != presenceEvent || f.Data != `{"topic":"room/2","count":1,"members":["bob"]}` {
		t.Fatalf("first event %+v", f)
	}

	admin := fmt.Sprintf("http://localhost:%d/sse/hubs/default/topics", testAdmin)
	body := func() string {
		req, _ := http.NewRequest(http.MethodGet, admin, nil)
		_, _, b := ssetest.DoT(t, req)
		return strings.TrimSpace(string(b))
	}
	want := `{"topics":[{"topic":"room/1","streams":3,"members":2},{"topic":"room/2","streams":2,"members":1}],"next":""}`
	if got := body(); got != want {
		t.Fatalf("topics: %s\nwant %s", got, want)
	}
	bob.Close()
	if f := nextEvent(t, w); f.Type != leaveEvent || f.Data != `{"topic":"room/2","member":"bob"}` {
		t.Fatalf("after bob left: %+v", f)
	}
	eventually(t, "bob's leave counts", func() bool {
		return body() == `{"topics":[{"topic":"room/1","streams":2,"members":1},{"topic":"room/2","streams":1}],"next":""}`
	})

	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://localhost:%d/events?topic=$presence/lobby", testHTTP), nil)
	status, _, b := ssetest.DoT(t, req)
	if status != http.StatusForbidden {
		t.Errorf("$presence/lobby: %d %s, want 403", status, b)
	}
	res := post(t, "/publish", "application/x-www-form-urlencoded", "topic=$presence/room/1&data=x")
	if res.Status != http.StatusBadRequest || !strings.Contains(res.Error, "reserved") {
		t.Errorf("publishing to $presence/room/1: %d %s, want 400 saying reserved", res.Status, res.Body)
	}
}
