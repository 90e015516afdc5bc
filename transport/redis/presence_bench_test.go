package redis

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// BenchmarkPresenceRedis measures presence in Redis with 10,000 members
// on one topic: the rate of joins and leaves applied by one node and
// delivered to another (changes/s), and what the members cost Redis
// (MEMORY USAGE of the keys), held by one node and by two.
func BenchmarkPresenceRedis(b *testing.B) {
	ssetest.RequireRedis(b, sharedRedis)
	const members = 10000
	c := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
	defer c.Close()
	ctx := context.Background()
	var rate, one, two float64
	for b.Loop() {
		prefix := uniquePrefix(b, sharedRedis)
		a := openBenchNode(b, prefix)
		o := openBenchNode(b, prefix)
		base := "{" + prefix + ":h}"
		usage := func() float64 {
			n := c.MemoryUsage(ctx, base+":pm:room", 0).Val() + c.MemoryUsage(ctx, base+":pn:"+a.node, 0).Val() +
				c.MemoryUsage(ctx, base+":pn:"+o.node, 0).Val()
			return float64(n) / members
		}
		began := time.Now()
		for i := range members {
			a.Join("room", fmt.Sprintf("member-%05d", i))
		}
		for i := range members {
			a.Leave("room", fmt.Sprintf("member-%05d", i))
		}
		o.sink.await(b, 2*members)
		rate = 2 * members / time.Since(began).Seconds()

		for i := range members {
			a.Join("room", fmt.Sprintf("member-%05d", i))
		}
		o.sink.await(b, 3*members)
		one = usage()
		for i := range members {
			o.Join("room", fmt.Sprintf("member-%05d", i))
		}
		for o.pres.pending() > 0 { // applied: no change to wait for
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		two = usage()
	}
	b.ReportMetric(rate, "changes/s")
	b.ReportMetric(one, "redis-bytes/member-1node")
	b.ReportMetric(two, "redis-bytes/member-2nodes")
}

// openBenchNode opens a node of hub h with a counting presence sink.
func openBenchNode(b *testing.B, prefix string) *benchNode {
	b.Helper()
	tr := &Transport{Addresses: []string{sharedRedis}, Prefix: prefix}
	s := &countSink{sink: newSink()}
	if err := tr.Open("h", defaultLimits, s); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	return &benchNode{Transport: tr, sink: s}
}

type benchNode struct {
	*Transport
	sink *countSink
}

// countSink counts presence changes.
type countSink struct {
	*sink
	n atomic.Int64
}

func (s *countSink) PresenceChanged(transport.PresenceChange) { s.n.Add(1) }

// await waits until n changes have come.
func (s *countSink) await(b *testing.B, n int64) {
	deadline := time.Now().Add(60 * time.Second)
	for s.n.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d changes of %d", s.n.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// pending returns the number of queued operations not yet taken by the
// worker.
func (p *presence) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}
