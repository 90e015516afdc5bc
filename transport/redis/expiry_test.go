package redis

import (
	"context"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// TestEveryKeyExpires (issue 19, item 5): a hub that no node runs any
// more must not keep its keys for ever: every key of the hub has an
// expiry, a week without history_ttl (history_ttl and a day with one),
// which the nodes' housekeeping refreshes while the hub lives.
func TestEveryKeyExpires(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	for _, c := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"no-history-ttl", 0, 7 * 24 * time.Hour},
		{"history-ttl", time.Hour, 25 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each waits for the housekeeping's refresh
			prefix := uniquePrefix(t, sharedRedis)
			rc := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
			defer rc.Close()
			ctx := context.Background()
			a := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 2, TTL: c.ttl, MaxBytes: 1 << 30})
			a.publishN(t, 3, "one")
			a.publish(t, "x", "one", "two")
			if _, err := a.Publish(ctx, transport.PublishRequest{Key: "k", Fingerprint: "f",
				Messages: []transport.Message{{Topics: []string{"three"}, Data: "y", Retry: -1}}}); err != nil {
				t.Fatal(err)
			}
			pattern := "{" + prefix + ":h}:*"
			var bad []string
			eventually(t, "every key to expire in "+c.want.String(), func() bool {
				bad = bad[:0]
				keys, err := rc.Keys(ctx, pattern).Result()
				if err != nil || len(keys) < 6 {
					return false
				}
				for _, k := range keys {
					want := c.want
					if strings.Contains(k, ":i:") { // an idempotency record: two days
						want = 48 * time.Hour
					}
					ttl, err := rc.PTTL(ctx, k).Result()
					if err != nil || ttl < want-time.Minute || ttl > want {
						bad = append(bad, k+" "+ttl.String())
					}
				}
				return len(bad) == 0
			})
			// the expiry is refreshed while the hub lives
			list := "{" + prefix + ":h}:" + a.Stats().Epoch + ":t:one"
			if err := rc.PExpire(ctx, list, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rc.HSet(ctx, "{"+prefix+":h}:meta", "refreshed", 0).Err(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the expiry refreshed", func() bool {
				ttl, err := rc.PTTL(ctx, list).Result()
				return err == nil && ttl > c.want-time.Minute
			})
		})
	}
}
