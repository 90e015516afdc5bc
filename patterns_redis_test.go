package caddysse

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestPatternsOverCaddyRedis: on a hub shared through Redis, a route with
// patterns and replay_latest loads; a first connection gets the newest
// event of each matching topic, in id order, then the live events of the
// matching topics only (carried back from Redis on the hub's channel);
// a resumption with Last-Event-ID gets exactly what it missed.
func TestPatternsOverCaddyRedis(t *testing.T) {
	addr := ssetest.RedisAddr()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if os.Getenv("SSE_REQUIRE_REDIS") != "" {
			t.Fatalf("no redis at %s: %v", addr, err)
		}
		t.Skipf("no redis at %s: %v", addr, err)
	}
	c.Close()
	prefix := fmt.Sprintf("sse-patterns-caddy-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		// a config without the hub closes it, so that nothing writes its
		// keys again once they are deleted
		startCaddy(t, "", "sse_publish /publish")
		rc := goredis.NewClient(&goredis.Options{Addr: addr})
		defer rc.Close()
		ctx := context.Background()
		if keys, _ := rc.Keys(ctx, "{"+prefix+":*").Result(); len(keys) > 0 {
			rc.Del(ctx, keys...)
		}
	})
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
