package memory

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/patternset"
	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/transporttest"
)

// TestPatternResumeAfterForgottenTopicsResets: once the history has
// forgotten idle topics, a pattern may have matched one of them: a
// pattern resume from before what they lost is a reset, as a resume of an
// unknown topic is; one from after it is served. The index of topics
// forgets them too.
func TestPatternResumeAfterForgottenTopicsResets(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes to 50,000 topics")
	}
	tr := open(t, newClock().Now, transport.Limits{Events: 1, MaxBytes: 1 << 30}, transporttest.NewRecorder(t))
	publish(t, tr, "keep/a")
	replay := func(after uint64) transport.Replay {
		t.Helper()
		r, err := tr.ReplayPatterns(context.Background(), transport.PatternQuery{
			ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(tr.epoch, after)},
			Patterns:    []string{"keep/*"},
		})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := replay(0); r.Reset || len(r.Events) != 1 { // and the index of topics is built
		t.Fatalf("resume of keep/* from 0: reset %v, %d events; want keep/a", r.Reset, len(r.Events))
	}
	for i := range maxIdleTopics + 1 {
		publish(t, tr, fmt.Sprint("gone/", i))
	}
	tr.SetLimits(transport.Limits{Events: 0, MaxBytes: 1 << 30}) // every topic idle
	tr.housekeep()
	tr.SetLimits(transport.Limits{Events: 1, MaxBytes: 1 << 30})
	publish(t, tr, "keep/b")
	tr.mu.Lock()
	forgotten, head, known := tr.forgotten, tr.seq, len(tr.topics)
	indexed, nodes := tr.index.Len(), tr.index.Nodes()
	tr.mu.Unlock()
	if forgotten == 0 || known != 1 {
		t.Fatalf("forgotten %d, %d topics known; want topics forgotten, keep/b alone known", forgotten, known)
	}
	if indexed != 1 || nodes != 2 {
		t.Errorf("the index of topics holds %d topics in %d nodes; want keep/b alone, in 2", indexed, nodes)
	}
	if r := replay(1); !r.Reset || len(r.Events) != 1 || r.Events[0].Seq != head {
		t.Errorf("resume of keep/* from 1: reset %v, %d events; want a reset with keep/b", r.Reset, len(r.Events))
	}
	if r := replay(forgotten); r.Reset || len(r.Events) != 1 {
		t.Errorf("resume of keep/* from %d: reset %v, %d events; want keep/b", forgotten, r.Reset, len(r.Events))
	}
}

// matchingSink is a sink that does what a hub will do with each event
// (issue 22): match its topics against the hub's pattern subscriptions.
type matchingSink struct {
	discard
	subs *patternset.Set[int]
	hits int
}

// Deliver implements transport.Sink.
func (s *matchingSink) Deliver(ev *transport.Event) int {
	for _, topic := range ev.Topics {
		s.subs.Match(topic, s.hit)
	}
	return s.hits
}

func (s *matchingSink) hit(int) { s.hits++ }

// BenchmarkPublishWithPatternWatches publishes one event of one topic
// through the memory transport with 0, 1,000 and 100,000 pattern watches
// on other prefixes (other/<i>/**): on the transport alone (its sink
// discards), and with a sink that matches each event against the
// patterns as a hub will, through a patternset.Set.
func BenchmarkPublishWithPatternWatches(b *testing.B) {
	for _, sinkKind := range []string{"transport", "hub-matching"} {
		for _, watches := range []int{0, 1000, 100_000} {
			b.Run(fmt.Sprintf("sink=%s/patterns=%d", sinkKind, watches), func(b *testing.B) {
				var subs patternset.Set[int]
				var sink transport.Sink = discard{}
				if sinkKind == "hub-matching" {
					sink = &matchingSink{subs: &subs}
				}
				tr := &Transport{}
				if err := tr.Open("bench", transport.Limits{Events: 100, MaxBytes: 64 << 20}, sink); err != nil {
					b.Fatal(err)
				}
				defer tr.Close()
				ctx := context.Background()
				for i := range watches {
					p := fmt.Sprintf("other/%d/**", i)
					if err := tr.WatchPatterns(ctx, []string{p}); err != nil {
						b.Fatal(err)
					}
					subs.Add(p, i)
				}
				req := transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"news/sport/42"}, Data: "hello", Retry: -1}}}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := tr.Publish(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkReplayPatterns replays a pattern that matches 10 topics of a
// history of 1,000 or 100,000 topics: the cost of finding the matching
// topics by matching every topic the history knows.
func BenchmarkReplayPatterns(b *testing.B) {
	for _, topics := range []int{1000, 100_000} {
		b.Run(fmt.Sprintf("topics=%d", topics), func(b *testing.B) {
			tr := &Transport{}
			if err := tr.Open("bench", transport.Limits{Events: 2, MaxBytes: 1 << 30}, discard{}); err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			ctx := context.Background()
			for i := range topics {
				name := fmt.Sprintf("other/%d", i)
				if i < 10 {
					name = fmt.Sprintf("news/%d", i)
				}
				if _, err := tr.Publish(ctx, transport.PublishRequest{Messages: []transport.Message{{Topics: []string{name}, Data: "x", Retry: -1}}}); err != nil {
					b.Fatal(err)
				}
			}
			q := transport.PatternQuery{ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(tr.epoch, 0)}, Patterns: []string{"news/*"}, MaxTopics: 64}
			b.ReportAllocs()
			for b.Loop() {
				r, err := tr.ReplayPatterns(ctx, q)
				if err != nil || len(r.Events) != 10 {
					b.Fatalf("%d events, %v", len(r.Events), err)
				}
			}
		})
	}
}

// BenchmarkPublishPatternOverhead measures what pattern subscriptions on
// other prefixes add to a publish, robustly on a loaded machine: it
// alternates blocks of publishes on two hubs in one process, one with no
// pattern subscriptions and one with n of them (both with the matching
// sink, so that the heap, and the collector's work, is the same for
// both), and reports each hub's ns/op and their ratio (1.00: no cost).
func BenchmarkPublishPatternOverhead(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprintf("patterns=%d", n), func(b *testing.B) {
			ctx := context.Background()
			hub := func(patterns int) (*Transport, *patternset.Set[int]) {
				subs := new(patternset.Set[int])
				tr := &Transport{}
				if err := tr.Open("bench", transport.Limits{Events: 100, MaxBytes: 64 << 20}, &matchingSink{subs: subs}); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = tr.Close() })
				for i := range patterns {
					p := fmt.Sprintf("other/%d/**", i)
					if err := tr.WatchPatterns(ctx, []string{p}); err != nil {
						b.Fatal(err)
					}
					subs.Add(p, i)
				}
				return tr, subs
			}
			base, _ := hub(0)
			with, _ := hub(n)
			req := transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"news/sport/42"}, Data: "hello", Retry: -1}}}
			const block = 256
			var spent [2]time.Duration
			var count [2]int
			hubs := [2]*Transport{base, with}
			b.ReportAllocs()
			b.ResetTimer()
			for round := 0; round*block < b.N; round++ {
				for k := range 2 {
					k ^= round % 2 // each goes first every other round
					start := time.Now()
					for range block {
						if _, err := hubs[k].Publish(ctx, req); err != nil {
							b.Fatal(err)
						}
					}
					spent[k] += time.Since(start)
					count[k] += block
				}
			}
			a, w := float64(spent[0])/float64(count[0]), float64(spent[1])/float64(count[1])
			b.ReportMetric(a, "ns/publish-without")
			b.ReportMetric(w, "ns/publish-with")
			b.ReportMetric(w/a, "ratio")
		})
	}
}
