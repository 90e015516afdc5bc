package caddysse

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
	sseredis "github.com/ssehub/caddy-sse/transport/redis"
)

// redisPresenceNodes opens two hubs ("nodes") sharing hub p through a
// redis-server of the test's own (the shared one can be busy for seconds
// with other packages' tests), each with a presence route as
// presenceHarness has, and a grace.
func redisPresenceNodes(t *testing.T, grace time.Duration) (a, b *harness) {
	t.Helper()
	addr, _, _ := ssetest.PrivateRedis(t)
	return redisPresenceNodesAt(t, addr, grace)
}

// redisPresenceNodesAt is redisPresenceNodes on the Redis at addr.
func redisPresenceNodesAt(t *testing.T, addr string, grace time.Duration) (a, b *harness) {
	t.Helper()
	node := func() *harness {
		hub := redisHub(t, addr, "p", grace)
		route := harnessRoute(t, hub, &Subscribe{Presence: "{http.sse.token.sub}",
			Token: &TokenConfig{Keys: []string{testTokenKey}, Alg: "HS256"}})
		route.tokenPlaceholders = true
		return &harness{t: t, hub: hub, route: route}
	}
	return node(), node()
}

// redisPrefix skips the test without the shared Redis, and returns a key
// prefix of its own, whose keys are deleted when it ends.
func redisPrefix(tb testing.TB) string {
	tb.Helper()
	addr := ssetest.RedisAddr()
	ssetest.RequireRedis(tb, addr)
	prefix := fmt.Sprintf("sse-root-%d-%d", os.Getpid(), time.Now().UnixNano())
	tb.Cleanup(func() {
		rc := goredis.NewClient(&goredis.Options{Addr: addr})
		defer rc.Close()
		ctx := context.Background()
		iter := rc.Scan(ctx, 0, "{"+prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rc.Del(ctx, iter.Val())
		}
	})
	return prefix
}

// redisHub opens hub "p" on the Redis at addr under prefix, with a grace.
func redisHub(tb testing.TB, addr, prefix string, grace time.Duration) *Hub {
	tb.Helper()
	hub, err := newHub("p", &sseredis.Transport{Addresses: []string{addr}, Prefix: prefix},
		transport.Limits{Events: 100, MaxBytes: 1 << 20}, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = hub.Destruct() })
	hub.setPresence(PresenceSettings{Grace: grace})
	return hub
}

// TestPresenceRedisNodes: with Redis, a member is counted once across
// nodes; a watcher on one node sees the joins and leaves of streams on
// the other; a member whose stream moves to the other node within the
// grace (a reconnection to another instance) causes no leave and no join.
func TestPresenceRedisNodes(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	a, b := redisPresenceNodes(t, grace)
	w := b.as("", "$presence/room")
	wantPresence(t, w, snapshotOf("room"))
	onA := a.as("alice", "room")
	wantPresence(t, w, joinOf("room", "alice"))
	b.as("alice", "room") // alice on both nodes: counted once
	b.subscribers(2)
	onA.Close()
	a.subscribers(0)
	time.Sleep(grace + 100*time.Millisecond) // past A's grace: no leave, alice is on B
	a.as("zed", "room")
	wantPresence(t, w, joinOf("room", "zed"))
	page := a.hub.TopicStreams("", "", 10)
	// the shared Redis may be busy with other packages' tests for longer
	// than the transport's timeout: a count that times out is asked again
	for try := 0; ; try++ {
		err := a.hub.addMembers(t.Context(), &page)
		if err == nil {
			break
		}
		if try == 4 {
			t.Fatal(err)
		}
		t.Logf("counting the members again: %v", err)
	}
	if len(page.Topics) != 1 || page.Topics[0] != (TopicStreams{Topic: "room", Streams: 1, Members: 2}) {
		t.Fatalf("topics on A %+v, want room with 1 stream and 2 members (alice on B, zed)", page.Topics)
	}

	// a reconnection to the other node within the grace: nothing
	z2 := b.as("zed", "room")
	time.Sleep(grace / 2)
	a.route.streams.close(endShutdown) // A's config stops: zed's stream there ends
	a.subscribers(0)
	time.Sleep(grace + 100*time.Millisecond)
	z2.Close()
	wantPresence(t, w, leaveOf("room", "zed"))
}

// TestPresenceRedisConnectionLost: a change published while a node's
// Pub/Sub connection is down never reaches it, so once the node is back in
// sync its watchers' streams end (to come back with a fresh snapshot)
// rather than show a stale list until the next change.
func TestPresenceRedisConnectionLost(t *testing.T) {
	t.Parallel()
	addr, _, _ := ssetest.PrivateRedis(t)
	a, b := redisPresenceNodesAt(t, addr, time.Hour)
	w := b.as("", "$presence/room")
	wantPresence(t, w, snapshotOf("room"))
	a.as("alice", "room")
	wantPresence(t, w, joinOf("room", "alice"))
	rc := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rc.Close()
	if err := rc.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	drainDropped(t, w)
	if n := b.disconnects(endResync); n != 1 {
		t.Errorf("%d streams ended for resync, want the watcher's", n)
	}
	w = b.as("", "$presence/room")
	wantPresence(t, w, snapshotOf("room", "alice"))
}
