package redis

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ssehub/caddy-sse/transport"
)

// BenchmarkPublishPatternWatch is BenchmarkPublish (one topic, a full
// history) with the subscribing node watching a topic only, or a pattern
// too (it then follows the hub's channel B:a): what a pattern node costs
// Redis per publish. pubsub-µs/op is Redis's time in the PUBLISH (or
// SPUBLISH) commands of the script, per publish.
func BenchmarkPublishPatternWatch(b *testing.B) {
	for _, pattern := range []bool{false, true} {
		b.Run(fmt.Sprint("pattern-node=", pattern), func(b *testing.B) {
			srv, pub, names := benchNodes(b, 1)
			if pattern {
				sub := openNode(b, srv.Addr, "p", "h", transport.Limits{Events: 1000, MaxBytes: 64 << 20}, withTimeout(DefaultTimeout+time.Millisecond))
				sub.watchPatterns(b, "a/**", "x/*")
			}
			msg := transport.PublishRequest{Messages: []transport.Message{{Topics: names, Data: strings.Repeat("x", 64), Retry: -1}}}
			fillHistory(b, pub, msg)
			meter := startRedisMeter(b, srv)
			b.ResetTimer()
			for range b.N {
				if _, err := pub.Publish(context.Background(), msg); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			meter.report(b)
			_, pu := redisUsec(b, srv, "publish")
			_, spu := redisUsec(b, srv, "spublish")
			b.ReportMetric((pu+spu)/float64(b.N), "pubsub-µs/op")
		})
	}
}

// latencySink records when each event reaches it.
type latencySink struct {
	got chan time.Time
}

// Deliver implements transport.Sink: it hands over when.
func (s *latencySink) Deliver(*transport.Event) int {
	s.got <- time.Now()
	return 1
}

// Interrupt implements transport.Sink.
func (s *latencySink) Interrupt([]string, string) {}

// Evicted implements transport.Sink.
func (s *latencySink) Evicted(*transport.Event) {}

// Disconnect implements transport.Sink.
func (s *latencySink) Disconnect(transport.Disconnect) int { return 0 }

// BenchmarkPatternLatency measures the time from a publish on one node
// to the delivery on another (their own clients and Pub/Sub connections
// to one private Redis, over loopback), one event at a time, for a
// subscriber of the topic and for one of a pattern matching it: the
// p50 and p99 over b.N events (at least 500).
func BenchmarkPatternLatency(b *testing.B) {
	for _, pattern := range []bool{false, true} {
		b.Run(fmt.Sprint("pattern=", pattern), func(b *testing.B) {
			srv := startPrivateRedis(b)
			limits := transport.Limits{Events: 1000, MaxBytes: 64 << 20}
			pub := openNode(b, srv.Addr, "p", "h", limits)
			s := &latencySink{got: make(chan time.Time, 1)}
			sub := &Transport{Addresses: []string{srv.Addr}, Prefix: "p", Timeout: caddy.Duration(DefaultTimeout + time.Millisecond)}
			startTransport(b, sub, "h", limits, s, true)
			ctx := context.Background()
			var err error
			if pattern {
				err = sub.WatchPatterns(ctx, []string{"news/*"})
			} else {
				err = sub.Watch(ctx, []string{"news/1"})
			}
			if err != nil {
				b.Fatal(err)
			}
			msg := transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"news/1"}, Data: strings.Repeat("x", 64), Retry: -1}}}
			n := max(b.N, 500)
			lat := make([]time.Duration, 0, n)
			b.ResetTimer()
			for range n {
				start := time.Now()
				if _, err := pub.Publish(ctx, msg); err != nil {
					b.Fatal(err)
				}
				select {
				case at := <-s.got:
					lat = append(lat, at.Sub(start))
				case <-time.After(5 * time.Second):
					b.Fatal("no delivery within 5s")
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkPatternReplayWide is the replay of patterns on a hub of
// 20,000 topics (one event each), where the walk of the topics stops at
// its limit (patternScanLimit, 5,000) or sooner: a resumption of "**"
// from the start (a reset after the walk's limit), the same within
// max_topics 100 (it stops after 101 topics), a latest-per-topic of a
// pattern that matches none of them, by name (nothing to read) and by the
// walk (all of it, for nothing), and one of the 1,000 oldest topics, by
// name.
// redis-µs/op is Redis's time in the script.
func BenchmarkPatternReplayWide(b *testing.B) {
	srv := startPrivateRedis(b)
	n := openNode(b, srv.Addr, "p", "h", transport.Limits{Events: 10, MaxBytes: 1 << 30})
	for batch := range 20 {
		msgs := make([]transport.Message, 1000)
		for i := range msgs {
			msgs[i] = transport.Message{Topics: []string{fmt.Sprintf("t/%d/%d", batch, i)}, Data: "x", Retry: -1}
		}
		if _, err := n.Publish(context.Background(), transport.PublishRequest{Messages: msgs}); err != nil {
			b.Fatal(err)
		}
	}
	from := transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(n.Stats().Epoch, 0), MaxBytes: 64 << 10}
	for _, c := range []struct {
		name string
		q    transport.PatternQuery
	}{
		{"resume-**", transport.PatternQuery{ReplayQuery: from, Patterns: []string{"**"}}},
		{"resume-**-max_topics-100", transport.PatternQuery{ReplayQuery: from, Patterns: []string{"**"}, MaxTopics: 100}},
		{"latest-per-topic-none-by-name", transport.PatternQuery{Patterns: []string{"none/*"}, LatestPerTopic: 1}},
		{"latest-per-topic-none-walk", transport.PatternQuery{Patterns: []string{"*/none"}, LatestPerTopic: 1}},
		{"latest-per-topic-oldest-1000-by-name", transport.PatternQuery{Patterns: []string{"t/0/*"}, LatestPerTopic: 1, MaxTopics: 64}},
	} {
		b.Run(c.name, func(b *testing.B) {
			if err := srv.client().ConfigResetStat(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				n.replayPatterns(b, c.q)
			}
			b.StopTimer()
			_, usec := redisUsec(b, srv, "evalsha")
			b.ReportMetric(usec/float64(b.N), "redis-µs/op")
		})
	}
}
