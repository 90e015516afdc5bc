//go:build unix

package browser

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestCrossOrigin subscribes from a page on one origin to an sse route on
// another that allows it, with credentials: a cookie of the page's site
// picks the topic, the stream survives reconnections with Last-Event-ID,
// and a fetch() sending Last-Event-ID itself passes its preflight. Without
// credentials the cookie is not sent and the subscription is refused, and
// a page on an origin the route does not allow cannot subscribe at all.
func TestCrossOrigin(t *testing.T) {
	t.Parallel() // a Caddy, ports (6, and the http ports of 7 and 8) and a Chromium of its own
	p := testPorts(6)
	allowed, api, other := origin(p.http), origin(p.http+1), origin(p.http+2)
	c := startCaddy(t, p, caddyfile(p, "",
		site(t, allowed, ""),
		site(t, other, ""),
		site(t, api, `
	sse /events {
		topic {http.request.cookie.user}/inbox
		cors_origins `+allowed+`
		retry 500ms
		max_age 2s
	}
	sse_publish /publish`)))
	br := startChromium(t)
	pg := br.openHarness(allowed)
	// Cookies belong to hosts, not ports: this one is sent to the api's
	// origin too, when credentials are included. (A real site takes the
	// topic from authentication, never from a raw cookie anyone can set;
	// here the cookie only shows whether credentials were sent.)
	pg.mustEval(`document.cookie = "user=alice; path=/; SameSite=Lax"`, nil)

	t.Run("with credentials", func(t *testing.T) {
		pg := pg.in(t)
		src := pg.open(api+"/events", sourceOptions{WithCredentials: true})
		pg.waitOpen(src, 1)
		before := publishData(t, api+"/publish", "alice/inbox", "before")
		pg.waitEvents(src, 1)
		pg.waitFor("max_age ended the stream", func(es []entry) bool {
			return len(only(es, src, "error")) > 0
		})
		away := publishData(t, api+"/publish", "alice/inbox", "while away")
		pg.waitOpen(src, 2)
		want, wantData := []string{before, away}, []string{"before", "while away"}
		got := pg.waitEvents(src, len(want))
		checkExactly(t, got, want, wantData)
		if got[0].Origin != api {
			t.Errorf("event origin %q, want %q", got[0].Origin, api)
		}
		reqs := pg.net.requests(api + "/events")
		if len(reqs) < 2 || reqs[1].Headers["last-event-id"] != before || reqs[1].Status != 200 {
			t.Fatalf("want a first request, then a reconnection with Last-Event-ID %s:\n%s", before, pg.net)
		}
		// Chromium sends Last-Event-ID on a cross-origin EventSource
		// without a preflight; the reconnections are plain GETs.
		for _, e := range accessLog(c, "/events") {
			if e.Request.Method != http.MethodGet {
				t.Errorf("unexpected %s /events from the EventSource", e.Request.Method)
			}
		}
		pg.close(src)
	})

	t.Run("fetch with Last-Event-ID", func(t *testing.T) {
		pg := pg.in(t)
		first := publishData(t, api+"/publish", "alice/inbox", "missed 1")
		publishData(t, api+"/publish", "alice/inbox", "missed 2")
		var res struct {
			Status int    `json:"status"`
			Text   string `json:"text"`
			Error  string `json:"error"`
		}
		pg.mustEval(js(`harness.fetchText(%s, {credentials: "include", headers: {"Last-Event-ID": %s}}, %s, 10000)`,
			api+"/events", first, "data: missed 2\n"), &res)
		if res.Status != 200 || !strings.Contains(res.Text, "data: missed 2\n") || strings.Contains(res.Text, "missed 1") {
			t.Fatalf("fetch with Last-Event-ID: %+v", res)
		}
		preflights := 0
		for _, e := range accessLog(c, "/events") {
			if e.Request.Method == http.MethodOptions && e.Status == http.StatusNoContent &&
				strings.EqualFold(e.Request.Headers.Get("Access-Control-Request-Headers"), "last-event-id") {
				preflights++
			}
		}
		if preflights != 1 {
			t.Fatalf("%d preflights for Last-Event-ID answered with 204, want 1", preflights)
		}
	})

	t.Run("without credentials", func(t *testing.T) {
		pg := pg.in(t)
		src := pg.open(api+"/events", sourceOptions{})
		refused(t, pg, src)
		checkRefusedGET(t, c, allowed, false)
	})

	t.Run("disallowed origin", func(t *testing.T) {
		pg := br.in(t).openHarness(other)
		pg.mustEval(`document.cookie = "user=mallory; path=/; SameSite=Lax"`, nil)
		src := pg.open(api+"/events", sourceOptions{WithCredentials: true})
		refused(t, pg, src)
		checkRefusedGET(t, c, other, true)
	})
}

// refused checks that source src fails for good without ever opening.
func refused(t *testing.T, pg *page, src int) {
	t.Helper()
	es := pg.waitFor(fmt.Sprintf("source %d failed", src), func(es []entry) bool {
		return len(only(es, src, "error")) > 0
	})
	if states := pg.states(); states[src] != closed || len(only(es, src, "open")) != 0 {
		t.Fatalf("source %d: state %d, want closed without opening:\n%s", src, states[src], dump(es))
	}
}

// checkRefusedGET checks that Caddy answered 403 to the GET /events from
// origin with (or without) a cookie. Other requests from the same origin,
// such as an earlier subtest's stream, may be logged later, when they end:
// the refused one is told apart by its cookie.
func checkRefusedGET(t *testing.T, c *caddyproc.Caddy, from string, withCookie bool) {
	t.Helper()
	found := 0
	for _, e := range accessLog(c, "/events") {
		if e.Request.Method != http.MethodGet || e.Request.Headers.Get("Origin") != from ||
			(e.Request.Headers.Get("Cookie") != "") != withCookie {
			continue
		}
		found++
		if e.Status != http.StatusForbidden {
			t.Fatalf("GET /events from %s (cookie: %v): %+v, want status 403", from, withCookie, e)
		}
	}
	if found == 0 {
		t.Fatalf("no GET /events from %s (cookie: %v) in the access log", from, withCookie)
	}
}
