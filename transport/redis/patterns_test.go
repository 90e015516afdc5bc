package redis

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/access"
	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// watchPatterns watches patterns, failing the test on error.
func (n *node) watchPatterns(t testing.TB, patterns ...string) {
	t.Helper()
	if err := n.WatchPatterns(context.Background(), patterns); err != nil {
		t.Fatalf("watch patterns %v: %v", patterns, err)
	}
}

// replayPatterns runs a pattern replay, failing the test on error.
func (n *node) replayPatterns(t testing.TB, q transport.PatternQuery) transport.Replay {
	t.Helper()
	r, err := n.ReplayPatterns(context.Background(), q)
	if err != nil {
		t.Fatalf("replay patterns: %v", err)
	}
	return r
}

// publishTo publishes one event to each list of topics, in order, and
// returns the seqs of those with a topic matching one of patterns.
func (n *node) publishTo(t testing.TB, patterns []string, lists ...[]string) (matching []uint64) {
	t.Helper()
	for i, topics := range lists {
		seq := seqOf(t, n.publish(t, fmt.Sprint(i), topics...).ID)
		if slices.ContainsFunc(topics, func(topic string) bool { return access.MatchAny(patterns, topic) }) {
			matching = append(matching, seq)
		}
	}
	return matching
}

// interruptions returns what the sink was asked to interrupt so far.
func (s *sink) interruptions() []interruption {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.interrupts)
}

// patternMix is a round of events for the pattern tests: of topics that
// match news/* alone, with others, or not at all.
var patternMix = [][]string{{"news/a"}, {"sport"}, {"news/b"}, {"news/a", "sport"}, {"news/a/deep"}, {"news/c"}}

// TestPatternResyncAfterPubSubKilled: the events of topics matching a
// watched pattern that were published while the node's Pub/Sub
// connection was down are read from the history once it is back (the
// topics are not watched: only the hub's channel carried them), and
// delivered in order, once, without interrupting anything.
func TestPatternResyncAfterPubSubKilled(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout), slowReconnect)
	b := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	patterns := []string{"news/*"}
	a.watchPatterns(t, patterns...)
	want := b.publishTo(t, patterns, patternMix...)
	a.sink.awaitSeq(t, want[len(want)-1])
	for round := range 2 {
		if err := srv.client().Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		// published while a reconnects (it waits a while first)
		for range 3 {
			want = append(want, b.publishTo(t, patterns, patternMix...)...)
		}
		a.sink.awaitSeq(t, want[len(want)-1])
		a.sink.checkSeqs(t, want)
		if st := a.Stats().State; st.Resyncs["reconnect"] != uint64(round+1) || st.WatchedPatterns != 1 {
			t.Fatalf("round %d: resyncs %v, watched patterns %d", round, st.Resyncs, st.WatchedPatterns)
		}
	}
	// live again after the resynchronisation
	want = append(want, b.publishTo(t, patterns, patternMix...)...)
	a.sink.awaitSeq(t, want[len(want)-1])
	a.sink.checkSeqs(t, want)
	if ints := a.sink.interruptions(); len(ints) != 0 {
		t.Fatalf("interrupts %v", ints)
	}
}

// TestPatternAndTopicOnTwoNodes: a node that watches a topic and a
// pattern matching it gets each event once (from the topic's channel or
// the hub's, whichever comes first), also while the pattern is watched,
// unwatched and its hub channel unsubscribed, again and again, as the
// other node publishes: no event of the topic is lost or repeated.
func TestPatternAndTopicOnTwoNodes(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	b := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	a.watch(t, "t/1")
	var want []uint64
	done := make(chan struct{})
	go func() { // b publishes meanwhile
		defer close(done)
		for i := range 150 {
			rs, err := b.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{
				{Topics: []string{"t/1"}, Data: fmt.Sprint(i), Retry: -1},
				{Topics: []string{"t/2"}, Data: fmt.Sprint(i), Retry: -1},
				{Topics: []string{"t/1", "t/2"}, Data: fmt.Sprint(i), Retry: -1},
			}})
			if err != nil {
				t.Error(err)
				return
			}
			for _, i := range []int{0, 2} { // t/1's
				_, seq, _ := transport.ParseID(rs[i].ID)
				want = append(want, seq)
			}
		}
	}()
	ctx := context.Background()
	for range 20 {
		a.watchPatterns(t, "t/*")
		a.UnwatchPatterns([]string{"t/*"})
		a.rd.unsubscribeIdle(ctx, 0) // the hub channel goes at once
	}
	<-done
	a.sink.awaitSeq(t, want[len(want)-1])
	all := a.sink.seqs()
	for i := 1; i < len(all); i++ {
		if all[i] <= all[i-1] {
			t.Fatalf("delivered %d after %d", all[i], all[i-1])
		}
	}
	got := slices.DeleteFunc(all, func(s uint64) bool { return !slices.Contains(want, s) })
	if !slices.Equal(got, want) {
		t.Fatalf("t/1's events delivered %d, want %d: %v", len(got), len(want), got)
	}
	if ints := a.sink.interruptions(); len(ints) != 0 {
		t.Fatalf("interrupts %v", ints)
	}
	// and the pattern, watched on a, gets b's events of both topics
	a.watchPatterns(t, "t/*")
	last := b.publishTo(t, []string{"t/*"}, []string{"t/2"}, []string{"u"}, []string{"t/3"})
	a.sink.awaitSeq(t, last[len(last)-1])
	if got := a.sink.seqs(); !slices.Equal(got[len(got)-2:], last) {
		t.Fatalf("after the pattern: %v, want %v at the end", got, last)
	}
}

// TestPatternGapOnHubChannel: a Seq skipped on the hub's channels while
// a pattern is watched (here an event forged on B:a) ends the streams of
// the watched patterns: it is never passed over silently.
func TestPatternGapOnHubChannel(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	a.watchPatterns(t, "g/*")
	r := a.publish(t, "1", "g/1")
	a.sink.awaitSeq(t, seqOf(t, r.ID))
	epoch, seq, _ := transport.ParseID(r.ID)
	forged := fmt.Sprintf("%s %d %d 200 1\n%d g/1\ndata: forged\n\n", epoch, seq+2, time.Now().UnixMilli(), seq)
	if err := a.publishOn(context.Background(), a.allChannel(), forged); err != nil {
		t.Fatal(err)
	}
	a.sink.await(t, "the interruption of g/*", func(_ []*transport.Event, ints []interruption) bool {
		return len(ints) == 1 && slices.Equal(ints[0].topics, []string{"g/*"}) && ints[0].reason == reasonGap
	})
}

// TestPatternResumeAfterEviction: a pattern resumption after events that
// a matching topic lost is a reset with what follows the loss; from after
// the loss it is served in full; a topic of another prefix that lost
// events does not matter.
func TestPatternResumeAfterEviction(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 2, MaxBytes: 1 << 30})
	a.publishN(t, 5, "p/a")  // 1-5: p/a keeps 4, 5
	a.publishN(t, 4, "q/x")  // 6-9: q/x keeps 8, 9
	a.publish(t, "6", "p/b") // 10
	epoch := a.Stats().Epoch
	resume := func(after uint64, patterns ...string) transport.Replay {
		return a.replayPatterns(t, transport.PatternQuery{
			ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(epoch, after)},
			Patterns:    patterns,
		})
	}
	check := func(what string, r transport.Replay, reset bool, want []uint64) {
		t.Helper()
		if got := eventSeqs(r.Events); r.Reset != reset || !slices.Equal(got, want) {
			t.Errorf("%s: reset %v, events %v; want %v, %v", what, r.Reset, got, reset, want)
		}
	}
	check("p/* after 1", resume(1, "p/*"), true, []uint64{4, 5, 10})
	check("p/* after 3", resume(3, "p/*"), false, []uint64{4, 5, 10})
	check("p/* after 5", resume(5, "p/*"), false, []uint64{10})
	check("** after 5", resume(5, "**"), true, []uint64{8, 9, 10})
	check("*/x after 7", resume(7, "*/x"), false, []uint64{8, 9})
}

// TestPatternWideScanBounded: a pattern without a literal part ("**")
// on a hub of more topics than a replay looks at (here 50 of 202) is
// served from the topics published to last: a resumption from before
// them is a reset to the newest, with TopicsCapped; one from among them
// is served in full; a latest per topic keeps to them, as does a pattern
// with more topics by name than that. A pattern with a literal part finds
// its topics by name, however old; without the names zset (evicted) it
// walks like "**" until the janitor rebuilt it.
func TestPatternWideScanBounded(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits, func(tr *Transport) { tr.patternScan = 50 })
	a.publish(t, "1", "old/1")
	a.publish(t, "2", "old/2")
	msgs := make([]transport.Message, 200) // w/i is i+3
	for i := range msgs {
		msgs[i] = transport.Message{Topics: []string{fmt.Sprintf("w/%d", i)}, Data: "x", Retry: -1}
	}
	if _, err := a.Publish(context.Background(), transport.PublishRequest{Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	epoch := a.Stats().Epoch
	check := func(what string, q transport.PatternQuery, reset, capped bool, want []uint64) {
		t.Helper()
		r := a.replayPatterns(t, q)
		if got := eventSeqs(r.Events); r.Reset != reset || r.TopicsCapped != capped || !slices.Equal(got, want) {
			t.Errorf("%s: reset %v, capped %v, events %v; want %v, %v, %v", what, r.Reset, r.TopicsCapped, got, reset, capped, want)
		}
	}
	resume := func(after uint64, patterns ...string) transport.PatternQuery {
		return transport.PatternQuery{
			ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(epoch, after)},
			Patterns:    patterns,
		}
	}
	latest := func(n int, patterns ...string) transport.PatternQuery {
		return transport.PatternQuery{ReplayQuery: transport.ReplayQuery{Latest: n}, Patterns: patterns}
	}
	check("** after 0", resume(0, "**"), true, true, seqRange(153, 202))
	check("** after 172", resume(172, "**"), false, false, seqRange(173, 202))
	check("newest 10 of */*", latest(10, "*/*"), false, false, seqRange(193, 202))
	check("newest 100 of */*", latest(100, "*/*"), false, true, seqRange(153, 202))
	// 200 topics by name: more than the bound, so w/* walks
	check("latest per topic of w/*", transport.PatternQuery{Patterns: []string{"w/*"}, LatestPerTopic: 3}, false, true, seqRange(153, 202))
	check("old/* after 0, by name", resume(0, "old/*"), false, false, []uint64{1, 2})
	check("newest 10 of old/*, by name", latest(10, "old/*"), false, false, []uint64{1, 2})

	ctx := context.Background()
	if err := a.client.Del(ctx, a.base+":"+epoch+":names").Err(); err != nil {
		t.Fatal(err)
	}
	check("newest 10 of old/*, names lost", latest(10, "old/*"), false, true, nil)
	if err := a.trim(ctx, false); err != nil { // the janitor's recount, which the replay asked for
		t.Fatal(err)
	}
	check("newest 10 of old/*, names rebuilt", latest(10, "old/*"), false, false, []uint64{1, 2})
}

// TestPatternMatchAgreesWithAccess: the scripts match topics to patterns
// as access.Match does, by name (patterns with a literal part) and by the
// walk of the topics (the others), empty segments, literal "*" and "**"
// segments and multibyte names included.
func TestPatternMatchAgreesWithAccess(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	topics := []string{"a", "a/", "/a", "/", "a//b", "a/b", "a/b/c", "a/*", "**", "*", "b/a", "ab/c", "a*/b",
		"é/x", "a/**/c", "a/x/c", "x/b"}
	seqTopic := map[uint64]string{}
	for _, topic := range topics {
		seqTopic[seqOf(t, a.publish(t, "x", topic).ID)] = topic
	}
	epoch := a.Stats().Epoch
	for _, p := range []string{"*", "**", "a/*", "a/**", "*/b", "*/*", "a/*/c", "/*", "a//*", "*/", "a/**/c",
		"ab/**", "a*/*", "é/*", "**/x", "*/**", "a/*/**", "/**"} {
		r := a.replayPatterns(t, transport.PatternQuery{
			ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(epoch, 0)},
			Patterns:    []string{p},
		})
		var got, want []string
		for _, ev := range r.Events {
			got = append(got, seqTopic[ev.Seq])
		}
		for _, topic := range topics {
			if access.Match(p, topic) {
				want = append(want, topic)
			}
		}
		if r.Reset || !slices.Equal(got, want) {
			t.Errorf("pattern %q: reset %v, topics %q; want %q", p, r.Reset, got, want)
		}
	}
}
