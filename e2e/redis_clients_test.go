package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// TestRedisSharedClients: the hubs of a Caddy instance that name the same
// Redis share one client (its connections named caddy-sse:<id>: one
// Pub/Sub connection for all of them, and the pool's few), which a
// reload keeps: a reload that re-creates every hub (their prefix changed)
// opens no new connection, or a couple at most.
// A config whose Redis answers but cannot serve (two standalone servers
// given as addresses, taken as a Cluster) fails to load, naming the
// cause, and leaves the running config and its client as they were.
// Ports: admin 2450, http 8450.
func TestRedisSharedClients(t *testing.T) {
	t.Parallel()
	addr, _, _ := privateRedis(t)
	other, _, _ := privateRedis(t)
	const hubs = 10
	config := func(addrs string, prefix string) string {
		var b strings.Builder
		b.WriteString("sse {\n")
		for i := range hubs {
			name := fmt.Sprint("h", i)
			if i == 0 {
				name = "default"
			}
			fmt.Fprintf(&b, "\t\thub %s {\n\t\t\ttransport redis {\n\t\t\t\taddress %s\n\t\t\t\tprefix %s\n\t\t\t}\n\t\t}\n", name, addrs, prefix)
		}
		b.WriteString("\t}\n")
		return b.String()
	}
	rc := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rc.Close()
	ctx := context.Background()
	// names counts this instance's connections by client name
	names := func() map[string]int {
		list, err := rc.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]int)
		for line := range strings.Lines(list) {
			for f := range strings.FieldsSeq(line) {
				if n, ok := strings.CutPrefix(f, "name=caddy-sse:"); ok {
					out[n]++
				}
			}
		}
		return out
	}
	dialled := func() int64 {
		info, err := rc.Info(ctx, "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
				fmt.Sscan(v, &n)
			}
		}
		return n
	}

	srv := opsStart(t, 2450, 8450, config(addr, "first"), redisSite)
	opsPublish(t, srv.base+"/publish", "topic=a&data=before")
	first := names()
	if len(first) != 1 {
		t.Fatalf("%d hubs made clients %v, want one", hubs, first)
	}
	var id string
	for n, conns := range first {
		id = n
		// one Pub/Sub connection for every hub, and the pool's few
		if conns < 2 || conns > 2+20 {
			t.Fatalf("%d hubs made %d connections", hubs, conns)
		}
		t.Logf("%d hubs: %d connections, all of client caddy-sse:%s", hubs, conns, n)
	}

	before := dialled()
	srv.reload(t, config(addr, "second"), redisSite)
	opsPublish(t, srv.base+"/publish", "topic=a&data=after the reload")
	if got := names(); got[id] == 0 || len(got) != 1 {
		t.Fatalf("after the reload, clients %v: the client caddy-sse:%s was not kept", got, id)
	}
	d := dialled() - before
	t.Logf("the reload made %d connections", d)
	if d > 2 {
		t.Errorf("the reload made %d connections, want at most 2: its %d hubs share the client and its Pub/Sub connection", d, hubs)
	}

	err := srv.Load(opsCaddyfile(srv.adminPort, srv.httpPort, config(addr+" "+other, "third"), redisSite))
	if err == nil || !strings.Contains(err.Error(), "not a Redis Cluster") {
		t.Fatalf("loading two standalone servers as addresses: %v", err)
	}
	t.Logf("the failed load: %v", err)
	opsPublish(t, srv.base+"/publish", "topic=a&data=after the failed load")
	if got := names(); got[id] == 0 || len(got) != 1 {
		t.Fatalf("after the failed load, clients %v", got)
	}
}
