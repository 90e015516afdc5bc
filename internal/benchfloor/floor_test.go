package benchfloor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestFloorHoldsUntilTheClientLeaves(t *testing.T) {
	returned := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		_ = Floor{}.ServeHTTP(w, r, nil)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := http.DefaultClient.Do(req) // returns once the headers are flushed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("Cache-Control") != "no-cache, no-transform" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	select {
	case <-returned:
		t.Fatal("the handler returned while the client was there")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not return after the client left")
	}
}

func TestCaddyfile(t *testing.T) {
	for input, ok := range map[string]bool{
		"sse_floor":          true,
		"sse_floor extra":    false,
		"sse_floor {\n x\n}": false,
	} {
		h := httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(input)}
		_, err := parseCaddyfile(h)
		if (err == nil) != ok {
			t.Errorf("%q: error %v", input, err)
		}
	}
}
