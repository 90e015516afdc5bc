package caddysse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// presenceMembers is how many members the presence benchmarks keep on
// one topic.
const presenceMembers = 10000

// benchPresenceHub opens a hub with the given grace and presenceMembers
// members on topic "room" (one stream each), and returns the requests
// that reconnect them.
func benchPresenceHub(b *testing.B, grace time.Duration) (*Hub, []subscribeRequest) {
	b.Helper()
	h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
	h.setPresence(PresenceSettings{Grace: grace})
	reqs := make([]subscribeRequest, presenceMembers)
	for i := range reqs {
		reqs[i] = subscribeRequest{topics: []string{"room"}, member: fmt.Sprintf("member-%05d", i)}
	}
	return h, reqs
}

// BenchmarkPresenceChurn is a connection's cost through the hub (subscribe
// then end) with presence, members cycling over 10,000: "reconnect", back
// within the grace (no change reaches the transport); "join-leave", a
// grace of 1 µs, each connection a join and each end a leave (the leave
// from its grace timer); "off", the same connections without a member.
// One watcher of $presence/room takes every change.
func BenchmarkPresenceChurn(b *testing.B) {
	for _, c := range []struct {
		name   string
		grace  time.Duration
		member bool
	}{{"reconnect", time.Hour, true}, {"join-leave", time.Microsecond, true}, {"off", time.Hour, false}} {
		b.Run(c.name, func(b *testing.B) {
			h, reqs := benchPresenceHub(b, c.grace)
			ctx := context.Background()
			w, _, err := h.Subscribe(ctx, subscribeRequest{presence: []string{"room"}})
			if err != nil {
				b.Fatal(err)
			}
			if c.name == "reconnect" {
				for _, req := range reqs { // everyone present, then back and forth within the grace
					s, _, _ := h.Subscribe(ctx, req)
					h.Unsubscribe(s, endClient)
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req := reqs[i%presenceMembers]
				if !c.member {
					req.member = ""
				}
				s, _, err := h.Subscribe(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				h.Unsubscribe(s, endClient)
				if i%256 == 0 {
					w.feed.take() // the watcher's writer
				}
				i++
			}
		})
	}
}

// BenchmarkPresenceChurnRedis is BenchmarkPresenceChurn's join-leave on
// a hub shared through Redis, watched from a second node: each iteration
// a connection with a member's join, its end and, after a grace of 1 µs,
// its leave; the clock runs until the other node has been told every
// change (changes/s: 2 per connection).
func BenchmarkPresenceChurnRedis(b *testing.B) {
	prefix := redisPrefix(b)
	h := redisHub(b, ssetest.RedisAddr(), prefix, time.Microsecond)
	other := redisHub(b, ssetest.RedisAddr(), prefix, time.Microsecond)
	ctx := context.Background()
	if _, _, err := other.Subscribe(ctx, subscribeRequest{presence: []string{"room"}}); err != nil {
		b.Fatal(err)
	}
	reqs := make([]subscribeRequest, presenceMembers)
	for i := range reqs {
		reqs[i] = subscribeRequest{topics: []string{"room"}, member: fmt.Sprintf("member-%05d", i)}
	}
	seen := func() uint64 {
		other.pres.wmu.Lock()
		defer other.pres.wmu.Unlock()
		return other.pres.seen
	}
	start := seen()
	i := 0
	began := time.Now()
	for b.Loop() {
		s, _, err := h.Subscribe(ctx, reqs[i%presenceMembers])
		if err != nil {
			b.Fatal(err)
		}
		h.Unsubscribe(s, endClient)
		i++
	}
	deadline := time.Now().Add(30 * time.Second)
	for seen() < start+uint64(2*i) {
		if time.Now().After(deadline) {
			b.Fatalf("the other node was told %d changes of %d", seen()-start, 2*i)
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(2*i)/time.Since(began).Seconds(), "changes/s")
}

// BenchmarkPresenceMemory reports what a member costs the hub and the
// memory transport (bytes/member): the live heap before and after 10,000
// members join one topic, without their streams.
func BenchmarkPresenceMemory(b *testing.B) {
	members := make([]string, presenceMembers)
	for i := range members {
		members[i] = fmt.Sprintf("member-%05d", i)
	}
	names := []string{"room"}
	var per float64
	for b.Loop() {
		h, _ := benchPresenceHub(b, time.Hour)
		before := heapInUse()
		for _, m := range members {
			h.pres.join(m, names)
		}
		per = float64(heapInUse()-before) / presenceMembers
		if n := h.pres.localMembers("room"); n != presenceMembers {
			b.Fatalf("%d members", n)
		}
		_ = h.Destruct()
	}
	b.ReportMetric(per, "bytes/member")
}
