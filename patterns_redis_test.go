package caddysse

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestPatternsOverCaddyRedis: on a hub shared through Redis, a route with
// patterns and replay_latest loads; a first connection gets the newest
// event of each matching topic, in id order, then the live events of the
// matching topics only (carried back from Redis on the hub's channel);
// a resumption with Last-Event-ID gets exactly what it missed.
func TestPatternsOverCaddyRedis(t *testing.T) {
	addr := ssetest.RedisAddr()
	prefix := redisPrefix(t)
	// a config without the hub closes it before its keys are deleted (the
	// cleanups run last first), so that nothing writes them again
	t.Cleanup(func() { startCaddy(t, "", "sse_publish /publish") })
	startCaddy(t, fmt.Sprintf(`sse {
		hub rp {
			history 100
			transport redis {
				address %s
				prefix %s
			}
		}
	}`, addr, prefix), `
	sse /dash {
		hub rp
		patterns
		replay_latest 1
	}
	sse_publish /publish {
		hub rp
	}`)
	client := ssetest.NewClient()
	publishTo(t, "o1-0", "orders/1")
	publishTo(t, "o2-0", "orders/2")
	a := publishTo(t, "o1-1", "orders/1")
	publishTo(t, "n", "news/1")
	b := publishTo(t, "o2-1", "orders/2")
	dash := openStream(t, client, "/dash?topic=orders/*", nil)
	for i, id := range []string{a.ID, b.ID} {
		if f := nextEvent(t, dash); f.LastID != id {
			t.Fatalf("replayed event %d: %+v, want %s", i, f, id)
		}
	}
	publishTo(t, "news", "news/2")
	live := publishTo(t, "live", "orders/3")
	both := publishTo(t, "both", "news/3", "orders/1")
	for _, id := range []string{live.ID, both.ID} {
		if f := nextEvent(t, dash); f.LastID != id {
			t.Fatalf("got %+v, want the live event %s", f, id)
		}
	}
	dash.Close()

	missed := publishTo(t, "missed", "orders/9")
	publishTo(t, "other", "news/9")
	resumed := openStream(t, client, "/dash?topic=orders/*", http.Header{"Last-Event-ID": {both.ID}})
	if f := nextEvent(t, resumed); f.LastID != missed.ID || f.Type == "reset" {
		t.Fatalf("resumed: %+v, want the missed event %s", f, missed.ID)
	}
	hub := findHub(t, "rp")
	eventually(t, "one pattern subscribed", func() bool { return hub.Stats().SubscribedPatterns == 1 })
}
