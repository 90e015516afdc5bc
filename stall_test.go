package caddysse

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestClientsThatNeverReadDelayNoOne: 130 clients that never read, each
// stuck in the replay of a large history (a bogus Last-Event-ID), and
// woken by an event of their topic, delay no other subscriber: neither one
// connected before nor one that joins after gets its events later than
// at once (they used to wait for the wake gate's grants, held by the
// stuck writers, until Caddy's write timeout cut them a minute later).
// Then the stuck streams, which make no progress, end as slow after
// write_timeout. (Not run again with hijack: a stream stuck in its start
// has not taken its connection over yet.)
func TestClientsThatNeverReadDelayNoOne(t *testing.T) {
	const attackers = wakeGrants + 2
	startCaddy(t, `sse {
		hub stall {
			history 1000
		}
	}`, `sse /events {
		hub stall
		write_timeout 4s
	}
	sse_publish /publish {
		hub stall
		max_size 4MiB
	}`)
	hub := findHub(t, "stall")
	slowBefore := hub.counters.disconnects[endSlow].Load()

	publishLarge(t, "big", 200)

	before := openStream(t, ssetest.NewClient(), "/events?topic=other", nil)
	stuck := ssetest.NewSmallBufferClient(4096)
	for range attackers {
		openStream(t, stuck, "/events?topic=big", http.Header{"Last-Event-ID": {"bogus"}})
	}
	eventually(t, "every stream subscribed", func() bool { return hub.Stats().Subscribers == attackers+1 })
	publishTo(t, "wake the stuck writers", "big")

	after := openStream(t, ssetest.NewClient(), "/events?topic=other", nil)
	id := publishTo(t, "for the others", "other").ID
	for name, s := range map[string]*ssetest.Stream{"connected before": before, "joined after": after} {
		if f := nextEvent(t, s); f.LastID != id {
			t.Fatalf("%s: got %q, want %s", name, f.LastID, id)
		}
	}
	if n := hub.counters.disconnects[endSlow].Load() - slowBefore; n != 0 {
		t.Fatalf("%d stuck streams were dropped before the others got their event: they waited for write_timeout", n)
	}

	deadline := time.Now().Add(30 * time.Second) // write_timeout, and 4 s for the sweeper, with room
	for hub.counters.disconnects[endSlow].Load()-slowBefore != attackers {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d stuck streams ended as slow", hub.counters.disconnects[endSlow].Load()-slowBefore, attackers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	eventually(t, "only the readers are left", func() bool { return hub.Stats().Subscribers == 2 })
	id = publishTo(t, "still there", "other").ID
	if f := nextEvent(t, before); f.LastID != id {
		t.Fatalf("got %q, want %s", f.LastID, id)
	}
}

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
