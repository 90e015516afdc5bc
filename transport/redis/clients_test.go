package redis

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idleCost opens n hubs on srv, all of one node's config, waits until they
// are up, and measures what they cost Redis while nothing happens: the
// connections of this node (by client name), and the commands per second
// over window, per command, as Redis counts them (INFO commandstats, which
// counts the commands the scripts run too). SSE_IDLE_SETTLE=d waits d
// before the window, past what the hubs do when they open.
func idleCost(t *testing.T, srv *privateRedis, n int, window time.Duration) (clients, pubsub int, c idleCounts) {
	t.Helper()
	var nodes []*node
	for i := range n {
		nodes = append(nodes, openNode(t, srv.Addr, "idle", fmt.Sprint("h", i), defaultLimits))
	}
	for _, nd := range nodes {
		eventually(t, "hub up", func() bool { return nd.Stats().State.Up })
	}
	if s := os.Getenv("SSE_IDLE_SETTLE"); s != "" { // measure past the hubs' first housekeeping
		settle, _ := time.ParseDuration(s)
		time.Sleep(settle) // a wait for the steady state, not a synchronisation
	}
	rc := srv.client()
	ctx := context.Background()
	if err := rc.ConfigResetStat(ctx).Err(); err != nil { // a private server: allowed
		t.Fatal(err)
	}
	time.Sleep(window) // a measurement window, not a synchronisation
	stats, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	c.byCmd = make(map[string]float64)
	for line := range strings.Lines(stats) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || cmd == "config|resetstat" || cmd == "client|list" { // info: the scripts call it (this call is counted after it answers)
			continue
		}
		calls := strings.TrimPrefix(strings.Split(rest, ",")[0], "calls=")
		v, _ := strconv.ParseFloat(calls, 64)
		rate := v / window.Seconds()
		c.byCmd[cmd] = rate
		c.total += rate
		switch {
		case sentCommands[cmd]:
			c.sent += rate
		case writeCommands[cmd]:
			c.writes += rate
		}
	}
	list, err := rc.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	clients, pubsub = countClients(list, nodes[0].clientName())
	return clients, pubsub, c
}

// countClients counts, in CLIENT LIST's answer, the connections named
// name, and those of them that are subscribed to channels (Pub/Sub).
func countClients(list, name string) (clients, pubsub int) {
	for line := range strings.Lines(list) {
		fields := make(map[string]string)
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if fields["name"] != name {
			continue
		}
		clients++
		if fields["sub"] != "0" || fields["ssub"] != "0" {
			pubsub++
		}
	}
	return clients, pubsub
}

// idleCounts is what idle hubs cost Redis, in commands per second.
type idleCounts struct {
	total  float64            // every command Redis ran, the scripts' own included
	sent   float64            // the commands the node sent (scripts, PINGs, subscriptions)
	writes float64            // the scripts' writes (each is propagated to replicas and the AOF)
	byCmd  map[string]float64 // per command
}

// sentCommands are the commands only a client sends (the scripts call
// none of them).
var sentCommands = map[string]bool{
	"evalsha": true, "eval": true, "ping": true, "script|load": true, "hello": true,
	"subscribe": true, "ssubscribe": true, "unsubscribe": true, "sunsubscribe": true,
	"client|setname": true, "config|get": true,
}

// writeCommands are the writes the scripts may run.
var writeCommands = map[string]bool{
	"hset": true, "hdel": true, "hincrby": true, "pexpire": true, "expire": true, "set": true, "del": true,
	"lpop": true, "rpush": true, "lpush": true, "lrem": true, "lset": true, "zadd": true, "zrem": true,
	"zpopmin": true,
}

// TestSharedClient: the hubs of a node that name the same Redis share one
// client: 50 hubs make one pool and one Pub/Sub connection, as one hub
// does. What 1 and 50 idle hubs cost is logged (SSE_IDLE_HUBS=n to
// measure another count, SSE_IDLE_WINDOW=d over another window than 3s).
func TestSharedClient(t *testing.T) {
	t.Parallel()
	n := 50
	if s := os.Getenv("SSE_IDLE_HUBS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	window := 3 * time.Second
	if s := os.Getenv("SSE_IDLE_WINDOW"); s != "" {
		window, _ = time.ParseDuration(s)
	}
	for _, hubs := range []int{1, n} {
		t.Run(fmt.Sprint(hubs, " hubs"), func(t *testing.T) {
			srv := startPrivateRedis(t)
			clients, pubsub, c := idleCost(t, srv, hubs, window)
			t.Logf("%d idle hubs over %v: %d redis clients (%d Pub/Sub); %.1f commands/s sent, %.1f run by Redis (the scripts' included), %.1f writes/s; per command %v",
				hubs, window, clients, pubsub, c.sent, c.total, c.writes, c.byCmd)
			// one Pub/Sub connection, and one pool (go-redis's default
			// size, 10 per CPU, reached when the hubs' periodic work
			// coincides)
			if pubsub != 1 || clients > 1+10*runtime.GOMAXPROCS(0) {
				t.Errorf("%d hubs made %d redis clients, %d of them Pub/Sub", hubs, clients, pubsub)
			}
		})
	}
}

// TestSharedClientReload: a reload opens the new config's hub before it
// closes the old one: the new hub takes the old one's client and Pub/Sub
// connection, and nothing reconnects; other options make another client;
// the last hub to close closes the client.
func TestSharedClientReload(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	c := srv.client()
	ctx := context.Background()
	connections := func() int {
		info, err := c.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		t.Fatal("no total_connections_received")
		return 0
	}
	old := &Transport{Addresses: []string{srv.Addr}, Prefix: "p"}
	if err := old.Open("h", defaultLimits, newSink()); err != nil {
		t.Fatal(err)
	}
	oldNode := &node{Transport: old}
	oldNode.publish(t, "before", "x")
	before := connections()

	n := openNode(t, srv.Addr, "p", "h", defaultLimits) // the new config
	if n.shared != old.shared {
		t.Fatal("the new config's hub has a client of its own")
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	n.watch(t, "x")
	n.sink.awaitSeq(t, seqOf(t, n.publish(t, "after", "x").ID))
	if d := connections() - before; d != 0 {
		t.Errorf("the reload made %d connections, want none", d)
	}

	other := openNode(t, srv.Addr, "p", "h2", defaultLimits, func(tr *Transport) { tr.DB = 1 })
	if other.shared == n.shared {
		t.Fatal("another database shares the client")
	}
	key := n.key
	_ = n.Close()
	clients.Lock()
	left := clients.m[key]
	clients.Unlock()
	if left != nil {
		t.Fatalf("the client outlived its last hub: %d users", left.refs)
	}
}
