package caddysse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestAdminTopics: GET /sse/hubs/<name>/topics lists the topics that this
// node's streams follow, in name order, with their counts (a stream of
// several topics under each, a pattern stream under its pattern), by
// prefix and in pages; a bad limit, another method and an unknown hub
// are refused and change nothing; a stream that ends leaves the list.
func TestAdminTopics(t *testing.T) {
	startCaddy(t, "", `sse /events
	sse /dash {
		patterns
	}`)
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://localhost:%d%s", testAdmin, path), nil)
		status, _, body := ssetest.DoT(t, req)
		return status, strings.TrimSpace(string(body))
	}
	want := func(path, body string) {
		t.Helper()
		if status, got := get(path); status != http.StatusOK || got != body {
			t.Fatalf("GET %s: %d %s\nwant %s", path, status, got, body)
		}
	}
	client := ssetest.NewClient()
	openStream(t, client, "/events?topic=b/1&topic=a", nil)
	openStream(t, client, "/events?topic=b/1", nil)
	openStream(t, client, "/events?topic=b/2", nil)
	dash := openStream(t, client, "/dash?topic=b/*", nil)

	want("/sse/hubs/default/topics",
		`{"topics":[{"topic":"a","streams":1},{"topic":"b/*","streams":1},{"topic":"b/1","streams":2},{"topic":"b/2","streams":1}],"next":""}`)
	want("/sse/hubs/default/topics?prefix=b/",
		`{"topics":[{"topic":"b/*","streams":1},{"topic":"b/1","streams":2},{"topic":"b/2","streams":1}],"next":""}`)
	want("/sse/hubs/default/topics?limit=2",
		`{"topics":[{"topic":"a","streams":1},{"topic":"b/*","streams":1}],"next":"b/*"}`)
	want("/sse/hubs/default/topics?limit=2&after=b/*",
		`{"topics":[{"topic":"b/1","streams":2},{"topic":"b/2","streams":1}],"next":""}`)
	want("/sse/hubs/default/topics?prefix=c", `{"topics":[],"next":""}`)

	for _, c := range []struct {
		method, path string
		status       int
		says         string
	}{
		{http.MethodGet, "/sse/hubs/default/topics?limit=0", http.StatusBadRequest, "from 1 to 1000"},
		{http.MethodGet, "/sse/hubs/default/topics?limit=1001", http.StatusBadRequest, "from 1 to 1000"},
		{http.MethodGet, "/sse/hubs/default/topics?limit=ten", http.StatusBadRequest, "ten"},
		{http.MethodGet, "/sse/hubs/default/topics?prefix=%zz", http.StatusBadRequest, "query string"},
		{http.MethodPost, "/sse/hubs/default/topics", http.StatusMethodNotAllowed, "GET"},
		{http.MethodGet, "/sse/hubs/nope/topics", http.StatusNotFound, "nope"},
	} {
		req, _ := http.NewRequest(c.method, fmt.Sprintf("http://localhost:%d%s", testAdmin, c.path), nil)
		status, _, body := ssetest.DoT(t, req)
		if status != c.status || !strings.Contains(string(body), c.says) {
			t.Errorf("%s %s: %d %s; want %d saying %q", c.method, c.path, status, body, c.status, c.says)
		}
	}

	// the refusals changed nothing; an ended stream leaves the list
	dash.Close()
	eventually(t, "the pattern stream leaves the list", func() bool {
		_, body := get("/sse/hubs/default/topics?prefix=b/")
		return body == `{"topics":[{"topic":"b/1","streams":2},{"topic":"b/2","streams":1}],"next":""}`
	})
}
