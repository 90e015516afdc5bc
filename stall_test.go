package caddysse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestClientsThatNeverReadDelayNoOne: 130 clients that never read, each
// stuck in the replay of a large history (a bogus Last-Event-ID), and
// woken by an event of their topic, delay no other subscriber: neither one
// connected before nor one that joins after gets its events later than
// at once (they used to wait for the wake gate's grants, held by the
// stuck writers, until Caddy's write timeout cut them a minute later).
// Then the stuck streams, which make no progress, end as slow after
// write_timeout.
func TestClientsThatNeverReadDelayNoOne(t *testing.T) {
	const attackers = wakeGrants + 2
	startCaddy(t, `sse {
		hub stall {
			history 1000
		}
	}`, `sse /events {
		hub stall
		write_timeout 3s
	}
	sse_publish /publish {
		hub stall
		max_size 4MiB
	}`)
	hub := findHub(t, "stall")
	slowBefore := hub.counters.disconnects[endSlow].Load()

	// 200 events of 64 KiB on topic "big"
	payload := strings.Repeat("x", 64<<10)
	for range 10 {
		var body strings.Builder
		body.WriteString("[")
		for i := range 20 {
			if i > 0 {
				body.WriteString(",")
			}
			fmt.Fprintf(&body, `{"topic":"big","data":"%s"}`, payload)
		}
		body.WriteString("]")
		if r := post(t, "/publish", "application/json", body.String()); r.Status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.Status, r.Body)
		}
	}

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

	eventually(t, "the stuck streams end as slow", func() bool {
		return hub.counters.disconnects[endSlow].Load()-slowBefore == attackers
	})
	eventually(t, "only the readers are left", func() bool { return hub.Stats().Subscribers == 2 })
	id = publishTo(t, "still there", "other").ID
	if f := nextEvent(t, before); f.LastID != id {
		t.Fatalf("got %q, want %s", f.LastID, id)
	}
}
