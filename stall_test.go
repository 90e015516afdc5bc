package caddysse

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestInterruptEndsTheStreamsOfItsTopics: when a transport cannot deliver
// every event in order, it interrupts topics (Hub.Interrupt): their
// streams end with a final retry hint, counted as resyncs, the others go
// on, and an interrupted client resumes from history with nothing lost.
func TestInterruptEndsTheStreamsOfItsTopics(t *testing.T) {
	startCaddy(t, "", basicSite)
	hub := findHub(t, "default")
	resyncsBefore := hub.counters.disconnects[endResync].Load()
	client := ssetest.NewClient()
	a := openStream(t, client, "/events?topic=ia", nil)
	b := openStream(t, client, "/events?topic=ib", nil)
	first := publishTo(t, "both", "ia", "ib").ID
	for _, s := range []*ssetest.Stream{a, b} {
		if f := nextEvent(t, s); f.LastID != first {
			t.Fatalf("got %q, want %s", f.LastID, first)
		}
	}

	hub.Interrupt([]string{"ia", "nobody"}, "gap")
	frames, err := a.ReadAll(wait)
	if err != nil || len(frames) == 0 || frames[len(frames)-1].Kind != ssetest.KindRetry {
		t.Fatalf("the interrupted stream ended with %+v (%v), want a final retry", frames, err)
	}
	missed := publishTo(t, "while away", "ia", "ib").ID
	if f := nextEvent(t, b); f.LastID != missed {
		t.Fatalf("the other stream got %q, want %s", f.LastID, missed)
	}
	resumed := openStream(t, client, "/events?topic=ia", http.Header{"Last-Event-ID": {a.LastID()}})
	if f := nextEvent(t, resumed); f.Type == "reset" || f.LastID != missed {
		t.Fatalf("resumed with %s %q, want %s", f.Type, f.LastID, missed)
	}

	hub.Interrupt(nil, "epoch")
	for name, s := range map[string]*ssetest.Stream{"b": b, "resumed": resumed} {
		if _, err := s.ReadAll(wait); err != nil {
			t.Fatalf("stream %s did not end: %v", name, err)
		}
	}
	eventually(t, "three resyncs counted", func() bool {
		return hub.counters.disconnects[endResync].Load()-resyncsBefore == 3
	})
}

// publishLarge publishes n events of 64 KiB to topic, one raw body each
// (decoding large JSON bodies is slow under the race detector).
func publishLarge(t *testing.T, topic string, n int) {
	t.Helper()
	payload := strings.Repeat("x", 64<<10)
	for range n {
		if r := post(t, "/publish?topic="+topic, "text/plain", payload); r.Status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.Status, r.Body)
		}
	}
}
