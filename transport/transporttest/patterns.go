package transporttest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/ssehub/caddy-sse/access"
	"github.com/ssehub/caddy-sse/transport"
)

// patternCases are the subtests of transport.PatternTransport; they run
// only when the Factory's transport implements it. Those that need a
// second node skip without Hub.Join.
var patternCases = []testCase{
	{"PatternWatchDeliversMatchingEventsOnceInOrder", testPatternWatch},
	{"PatternWatchesAreCounted", testPatternWatchCounting},
	{"PatternResumeReplaysMatchingTopicsOnce", testPatternResume},
	{"PatternIsLiteralInTopics", testPatternLiteralInTopics},
	{"PatternResumeThatCannotBeServedResets", testPatternResets},
	{"PatternReplayAndLiveEventsMeetAtHead", testPatternSeam},
	{"MaxTopicsBoundsTheMergeWithResetAndNewest", testPatternMaxTopics},
	{"MaxTopicsBoundedReplayReadsInPages", testPatternMaxTopicsPages},
	{"LatestPerTopic", testLatestPerTopic},
	{"LatestPerTopicReadsInPages", testLatestPerTopicPages},
	{"PatternWatchAndReplayAcrossNodes", testPatternNodes},
}

// runPatterns runs patternCases, or skips them all when the factory's
// transport is no transport.PatternTransport.
func runPatterns(t *testing.T, f Factory) {
	if _, ok := f(t, big, NewRecorder(t)).Transport.(transport.PatternTransport); !ok {
		t.Skip("the transport does not implement transport.PatternTransport (pattern subscriptions, replay_latest)")
	}
	for _, c := range patternCases {
		t.Run(c.name, func(t *testing.T) { c.run(t, f) })
	}
}

// pt returns n's transport as a PatternTransport.
func (n *node) pt() transport.PatternTransport {
	n.t.Helper()
	p, ok := n.tr.(transport.PatternTransport)
	if !ok {
		n.t.Fatalf("%T is no transport.PatternTransport", n.tr)
	}
	return p
}

// watchPatterns watches patterns on n.
func (n *node) watchPatterns(patterns ...string) {
	n.t.Helper()
	if err := n.pt().WatchPatterns(ctx(n.t), patterns); err != nil {
		n.t.Fatalf("WatchPatterns(%q): %v", patterns, err)
	}
}

// replayPatterns runs q on n and checks what holds for every replay.
func (n *node) replayPatterns(q transport.PatternQuery) transport.Replay {
	n.t.Helper()
	r, err := n.pt().ReplayPatterns(ctx(n.t), q)
	if err != nil {
		n.t.Fatalf("ReplayPatterns(%+v): %v", q, err)
	}
	checkReplay(n.t, n.tr, r)
	return r
}

// resumePatterns replays patterns (and topics) from the last event id id.
func (n *node) resumePatterns(id string, patterns []string, topics ...string) transport.Replay {
	n.t.Helper()
	return n.replayPatterns(transport.PatternQuery{
		ReplayQuery: transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: id},
		Patterns:    patterns,
	})
}

// pubEvent is an event the test published: its Seq and topics.
type pubEvent struct {
	seq    uint64
	topics []string
}

// publishAll publishes one message to each list of topics, in order, and
// returns what it published.
func (n *node) publishAll(lists ...[]string) []pubEvent {
	n.t.Helper()
	out := make([]pubEvent, len(lists))
	for i, topics := range lists {
		out[i] = pubEvent{seqOf(n.t, n.publish(topics...)), topics}
	}
	return out
}

// matching returns the Seqs of the events of evs after seq that have a
// topic in topics or matching one of patterns.
func matching(evs []pubEvent, after uint64, patterns []string, topics ...string) []uint64 {
	var out []uint64
	for _, ev := range evs {
		if ev.seq > after && slices.ContainsFunc(ev.topics, func(name string) bool {
			return slices.Contains(topics, name) || access.MatchAny(patterns, name)
		}) {
			out = append(out, ev.seq)
		}
	}
	return out
}

// matchingEvents returns the Seqs of the delivered events evs that have
// a topic matching one of patterns.
func matchingEvents(evs []*transport.Event, patterns ...string) []uint64 {
	var out []uint64
	for _, ev := range evs {
		if slices.ContainsFunc(ev.Topics, func(name string) bool { return access.MatchAny(patterns, name) }) {
			out = append(out, ev.Seq)
		}
	}
	return out
}

// patternMix is a mix of events for the pattern cases: topics that match
// news/** and */b or not, an event of several matching topics, events of
// matching and other topics, a topic named like a pattern.
var patternMix = [][]string{
	{"news/a"},
	{"sport/x"},
	{"news/a", "news/b"},
	{"x/b"},
	{"news"},
	{"news/a", "x/b"},
	{"a/b/c"},
	{"news/deep/er/still"},
	{"sport/x", "news/c"},
	{"news/*"},
	{"*/b"},
	{"b"},
}

// testPatternWatch: from the moment WatchPatterns returns, every event
// one of whose topics matches a watched pattern reaches the sink once, in
// Seq order, topics first published to after the watch included; an
// event of several matching topics once.
func testPatternWatch(t *testing.T, f Factory) {
	e := open(t, f, big)
	patterns := []string{"news/**", "*/b"}
	e.watchPatterns(patterns...)
	evs := e.publishAll(patternMix...)
	want := matching(evs, 0, patterns)
	if len(want) < 7 {
		t.Fatalf("the mix has %d matching events; the test needs more", len(want))
	}
	got := e.rec.AwaitFunc(t, fmt.Sprintf("the delivery of Seqs %v", want), func(got []*transport.Event) bool {
		return containsSeqs(got, want)
	})
	// the recorder fails the test on any repeat or disorder; a transport
	// may deliver events of unwatched topics too
	wantSeqs(t, "delivered events matching news/** or */b", matchingEvents(got, patterns...), want)
}

// testPatternWatchCounting: WatchPatterns calls are counted per pattern,
// each undone by one UnwatchPatterns, apart from topics, and a pattern
// still watched once gets its events.
func testPatternWatchCounting(t *testing.T, f Factory) {
	e := open(t, f, big)
	p := e.pt()
	want := func(what string, patterns, topics int) {
		t.Helper()
		st := e.tr.Stats().State
		if st.WatchedPatterns != patterns || st.WatchedTopics != topics {
			t.Errorf("%s: %d watched patterns, %d watched topics; want %d, %d", what, st.WatchedPatterns, st.WatchedTopics, patterns, topics)
		}
	}
	want("fresh", 0, 0)
	e.watchPatterns("a/*", "b/**")
	e.watchPatterns("a/*", "b/**")
	e.watch("a/*")
	want("a/* and b/** twice, and the topic a/*", 2, 1)
	p.UnwatchPatterns([]string{"a/*", "b/**"})
	want("a/* and b/** unwatched once", 2, 1)
	r := e.publish("b/x/y")
	e.rec.AwaitSeq(t, seqOf(t, r))
	p.UnwatchPatterns([]string{"a/*", "b/**"})
	want("patterns unwatched as often as watched", 0, 1)
	e.tr.Unwatch([]string{"a/*"})
	want("all unwatched", 0, 0)
}

// testPatternResume: a resume of patterns (and topics) from a current id
// replays exactly the newer retained events with a matching topic (or one
// of the topics), in order, an event of several once; a pattern that
// matches nothing replays nothing, and its Head is the hub's.
func testPatternResume(t *testing.T, f Factory) {
	e := open(t, f, big)
	evs := e.publishAll(patternMix...)
	id := func(seq uint64) string { return transport.FormatID(e.epoch(), seq) }
	head := evs[len(evs)-1].seq
	queries := []struct {
		patterns, topics []string
	}{
		{[]string{"news/**"}, nil},
		{[]string{"*/b"}, nil},
		{[]string{"news/**", "*/b"}, nil},
		{[]string{"news/*"}, []string{"news"}},
		{[]string{"*/*"}, []string{"news/a", "b"}}, // a topic that a pattern matches too
		{[]string{"**"}, nil},
		{[]string{"*"}, nil},
		{[]string{"nothing/**", "*/*/*/*/*"}, nil},
	}
	for _, q := range queries {
		for _, after := range []uint64{0, 1, 2, 5, head - 1, head} {
			what := fmt.Sprintf("patterns %q, topics %q, after %d", q.patterns, q.topics, after)
			r := e.resumePatterns(id(after), q.patterns, q.topics...)
			wantReplay(t, what, r, false, matching(evs, after, q.patterns, q.topics...))
			if r.Head != head || r.More || r.TopicsCapped {
				t.Errorf("%s: Head %d, More %v, TopicsCapped %v; want %d, false, false", what, r.Head, r.More, r.TopicsCapped, head)
			}
		}
	}
	// without patterns, it answers as Replay does
	for _, after := range []uint64{0, 3} {
		want := e.resume(id(after), "news/a", "x/b")
		got := e.resumePatterns(id(after), nil, "news/a", "x/b")
		wantReplay(t, fmt.Sprintf("topics only, after %d", after), got, want.Reset, seqs(want.Events))
	}
}

// testPatternLiteralInTopics: a string in Topics is a topic, "*" and
// "**" segments included; the same string in Patterns is a pattern.
// Which one a requested string is, is the hub's decision (SPEC sections
// 4 and 11), not the transport's.
func testPatternLiteralInTopics(t *testing.T, f Factory) {
	e := open(t, f, big)
	evs := e.publishAll(patternMix...)
	id := transport.FormatID(e.epoch(), 0)
	literal := func(name string) []uint64 { return matching(evs, 0, nil, name) }
	wantReplay(t, `topic "news/*"`, e.resumePatterns(id, nil, "news/*"), false, literal("news/*"))
	wantReplay(t, `topic "*/b"`, e.resumePatterns(id, nil, "*/b"), false, literal("*/b"))
	wantReplay(t, `pattern "news/*"`, e.resumePatterns(id, []string{"news/*"}), false, matching(evs, 0, []string{"news/*"}))
	if len(literal("news/*")) != 1 || len(matching(evs, 0, []string{"news/*"})) < 4 {
		t.Fatal("the mix no longer tells topics from patterns")
	}
}

// testPatternResets: a resume of a pattern that cannot be served
// completely (a matching topic lost events after the id, or the id is not
// current) is a reset with the retained events of the matching topics
// after the newest event any of them lost; a pattern whose topics lost
// nothing after the id is served in full.
func testPatternResets(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 3, MaxBytes: 1 << 40})
	var evs []pubEvent
	for range 6 {
		evs = append(evs, e.publishAll([]string{"a/x"})...) // 1-6; a/x keeps 4-6
	}
	evs = append(evs, e.publishAll([]string{"a/y"}, []string{"b/z"}, []string{"a/y", "b/z"})...) // 7, 8, 9
	id := func(seq uint64) string { return transport.FormatID(e.epoch(), seq) }
	wantReplay(t, "a/* after 1, a/x lost 2-3", e.resumePatterns(id(1), []string{"a/*"}), true, []uint64{4, 5, 6, 7, 9})
	wantReplay(t, "a/* after 3", e.resumePatterns(id(3), []string{"a/*"}), false, []uint64{4, 5, 6, 7, 9})
	wantReplay(t, "*/y and b/* after 1: no topic lost", e.resumePatterns(id(1), []string{"*/y", "b/*"}), false, []uint64{7, 8, 9})
	wantReplay(t, "a/y and a/** after 0", e.resumePatterns(id(0), []string{"a/**"}, "a/y"), true, []uint64{4, 5, 6, 7, 9})
	wantReplay(t, "a/* from another epoch", e.resumePatterns(transport.FormatID(otherEpoch(e.epoch()), 8), []string{"a/*"}), true, []uint64{4, 5, 6, 7, 9})
	wantReplay(t, "a/* from a malformed id", e.resumePatterns("garbage", []string{"a/*"}), true, []uint64{4, 5, 6, 7, 9})
	wantReplay(t, "a/* from beyond the head", e.resumePatterns(id(10), []string{"a/*"}), true, []uint64{4, 5, 6, 7, 9})
	r := e.replayPatterns(transport.PatternQuery{
		ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: id(1), ResetLatest: 2},
		Patterns:    []string{"a/*"},
	})
	wantReplay(t, "a/* after 1, newest 2", r, true, []uint64{7, 9})
	r = e.replayPatterns(transport.PatternQuery{ReplayQuery: transport.ReplayQuery{Latest: 4}, Patterns: []string{"**"}})
	wantReplay(t, "newest 4 of **", r, false, []uint64{6, 7, 8, 9})
}

// testPatternSeam: a pattern subscription that watches and replays while
// events are being published gets every matching event once: those up
// to Replay.Head in Replay.Events, the later ones from the sink.
func testPatternSeam(t *testing.T, f Factory) {
	e := open(t, f, big)
	checkPatternSeam(t, &e.node, &e.node)
}

// checkPatternSeam is checkSeam for the pattern a/*: rounds of a
// publisher on pub, to topics that match it or not, against a subscriber
// on sub that watches and replays the pattern from where the round began
// after the publisher published some of the round's events. Nobody else
// publishes meanwhile.
func checkPatternSeam(t *testing.T, pub, sub *node) {
	const rounds, perRound = 16, 12
	mix := [][]string{{"a/1"}, {"b"}, {"a/2", "b"}, {"a/1", "a/2"}, {"a"}, {"a/1/x"}}
	patterns := []string{"a/*"}
	ep := pub.epoch()
	published := pub.tr.Stats().Head // the hub may have events already
	for round := range rounds {
		start := published
		var mark int
		var rep transport.Replay
		evs := publishRound(t, pub, round, perRound, func(i int) []string { return mix[(i+round)%len(mix)] }, func() {
			mark = sub.rec.Len()
			sub.watchPatterns(patterns...)
			rep = sub.resumePatterns(transport.FormatID(ep, start), patterns)
		})
		published += perRound

		all := matching(evs, 0, patterns)
		var replayed, live []uint64
		for _, s := range all {
			if s <= rep.Head {
				replayed = append(replayed, s)
			} else {
				live = append(live, s)
			}
		}
		wantReplay(t, fmt.Sprintf("round %d, head %d: replayed", round, rep.Head), rep, false, replayed)
		sub.rec.AwaitFunc(t, fmt.Sprintf("round %d: the delivery of Seqs %v after WatchPatterns", round, live), func(evs []*transport.Event) bool {
			return containsSeqs(evs[mark:], live)
		})
		sub.pt().UnwatchPatterns(patterns)
	}
}

// maxTopicsSetup publishes to t/1 to t/5, then t/1 again: Seqs 1-5, 6;
// the topics published to last are t/1 (6), t/5, t/4, t/3, t/2.
func maxTopicsSetup(t *testing.T, f Factory) *env {
	e := open(t, f, big)
	e.publishAll([]string{"t/1"}, []string{"t/2"}, []string{"t/3"}, []string{"t/4"}, []string{"t/5"}, []string{"t/1"}, []string{"u"})
	return e
}

// testPatternMaxTopics: the merge takes the events of at most MaxTopics
// topics. A resume with more topics to merge is a reset whose events are
// the newest, after the newest event of the first topic left out (taking
// the topics published to last first), and TopicsCapped; within the
// bound, a resume is served in full. Latest and ResetLatest are bounded
// alike.
func testPatternMaxTopics(t *testing.T, f Factory) {
	e := maxTopicsSetup(t, f)
	id := func(seq uint64) string { return transport.FormatID(e.epoch(), seq) }
	q := func(after uint64, maxTopics int) transport.PatternQuery {
		return transport.PatternQuery{
			ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: id(after)},
			Patterns:    []string{"t/*"},
			MaxTopics:   maxTopics,
		}
	}
	check := func(what string, r transport.Replay, reset, capped bool, want []uint64) {
		t.Helper()
		wantReplay(t, what, r, reset, want)
		if r.TopicsCapped != capped {
			t.Errorf("%s: TopicsCapped %v, want %v", what, r.TopicsCapped, capped)
		}
	}
	check("after 0, 5 topics, at most 3", e.replayPatterns(q(0, 3)), true, true, []uint64{4, 5, 6})
	check("after 2, 4 topics, at most 3", e.replayPatterns(q(2, 3)), true, true, []uint64{4, 5, 6})
	check("after 3, 3 topics, at most 3", e.replayPatterns(q(3, 3)), false, false, []uint64{4, 5, 6})
	check("after 0, 5 topics, at most 5", e.replayPatterns(q(0, 5)), false, false, span(1, 6))
	check("after 0, no bound", e.replayPatterns(q(0, 0)), false, false, span(1, 6))
	check("after 0, at most 1", e.replayPatterns(q(0, 1)), true, true, []uint64{6})
	r := q(0, 3)
	r.ResetLatest = 2
	check("after 0, at most 3, newest 2", e.replayPatterns(r), true, true, []uint64{5, 6})
	r = q(0, 3)
	r.Topics = []string{"u"} // a topic counts as one of them
	check("t/* and u after 0, at most 3", e.replayPatterns(r), true, true, []uint64{5, 6, 7})
	latest := func(n, maxTopics int) transport.PatternQuery {
		return transport.PatternQuery{ReplayQuery: transport.ReplayQuery{Latest: n}, Patterns: []string{"t/*"}, MaxTopics: maxTopics}
	}
	check("newest 10, at most 3", e.replayPatterns(latest(10, 3)), false, true, []uint64{4, 5, 6})
	check("newest 2, at most 3", e.replayPatterns(latest(2, 3)), false, false, []uint64{5, 6})
	check("newest 3, at most 3", e.replayPatterns(latest(3, 3)), false, false, []uint64{4, 5, 6})
	check("newest 10, no bound", e.replayPatterns(latest(10, 0)), false, false, span(1, 6))
}

// testPatternMaxTopicsPages: a reset bounded by MaxTopics read in pages,
// each resuming from the last event of the one before, gives the same
// events as when read whole: the pages after the first resume within the
// bound.
func testPatternMaxTopicsPages(t *testing.T, f Factory) {
	e := maxTopicsSetup(t, f)
	q := transport.PatternQuery{
		ReplayQuery: transport.ReplayQuery{Resume: true, LastEventID: transport.FormatID(e.epoch(), 0)},
		Patterns:    []string{"t/*"},
		MaxTopics:   3,
	}
	whole := e.replayPatterns(q)
	wantReplay(t, "whole", whole, true, []uint64{4, 5, 6})
	got := readPatternPages(t, &e.node, "pages of 1 byte", q, 1, true)
	wantSeqs(t, "pages of 1 byte", got, seqs(whole.Events))
}

// readPatternPages is readPages for a PatternQuery: the pages after the
// first resume from the last event of the one before, with the same
// patterns, bound and LatestPerTopic.
func readPatternPages(t *testing.T, n *node, what string, q transport.PatternQuery, maxBytes int, reset bool) []uint64 {
	t.Helper()
	q.MaxBytes = maxBytes
	return readPagesOf(t, what, maxBytes, reset, func(page int, lastID string) transport.Replay {
		if page > 0 {
			q.ReplayQuery = transport.ReplayQuery{Topics: q.Topics, Resume: true, LastEventID: lastID, MaxBytes: maxBytes}
		}
		return n.replayPatterns(q)
	})
}

// latestSetup publishes to a/1 three times (1-3), a/2 (4), b twice (5, 6),
// a/1 and b (7), c (8).
func latestSetup(t *testing.T, f Factory) *env {
	e := open(t, f, big)
	e.publishAll([]string{"a/1"}, []string{"a/1"}, []string{"a/1"}, []string{"a/2"}, []string{"b"}, []string{"b"}, []string{"a/1", "b"}, []string{"c"})
	return e
}

// testLatestPerTopic: LatestPerTopic gives the newest n retained events
// of each topic of the query (topics, and the topics matching its
// patterns), in Seq order, an event of several once; MaxTopics keeps to
// the topics published to last; a pattern matching nothing gives nothing.
func testLatestPerTopic(t *testing.T, f Factory) {
	e := latestSetup(t, f)
	q := func(n, maxTopics int, patterns []string, topics ...string) transport.PatternQuery {
		return transport.PatternQuery{ReplayQuery: transport.ReplayQuery{Topics: topics}, Patterns: patterns, MaxTopics: maxTopics, LatestPerTopic: n}
	}
	check := func(what string, r transport.Replay, capped bool, want []uint64) {
		t.Helper()
		wantReplay(t, what, r, false, want)
		if r.TopicsCapped != capped || r.More || r.Head != 8 {
			t.Errorf("%s: TopicsCapped %v, More %v, Head %d; want %v, false, 8", what, r.TopicsCapped, r.More, r.Head, capped)
		}
	}
	check("2 of a/* and b", e.replayPatterns(q(2, 0, []string{"a/*"}, "b")), false, []uint64{3, 4, 6, 7})
	check("1 of a/* and b", e.replayPatterns(q(1, 0, []string{"a/*"}, "b")), false, []uint64{4, 7})
	check("10 of a/*", e.replayPatterns(q(10, 0, []string{"a/*"})), false, []uint64{1, 2, 3, 4, 7})
	check("1 of topics a/1 and a/2", e.replayPatterns(q(1, 0, nil, "a/1", "a/2")), false, []uint64{4, 7})
	check("1 of **", e.replayPatterns(q(1, 0, []string{"**"})), false, []uint64{4, 7, 8})
	check("2 of a/* and b, at most 2 topics", e.replayPatterns(q(2, 2, []string{"a/*"}, "b")), true, []uint64{3, 6, 7})
	check("2 of **, at most 1 topic", e.replayPatterns(q(2, 1, []string{"**"})), true, []uint64{8})
	check("2 of a/*, at most 2 topics", e.replayPatterns(q(2, 2, []string{"a/*"})), false, []uint64{3, 4, 7})
	check("a pattern matching nothing", e.replayPatterns(q(3, 0, []string{"z/*"})), false, nil)
	check("a topic never published to", e.replayPatterns(q(3, 0, nil, "z")), false, nil)
	r := q(2, 0, []string{"a/*"}, "b")
	r.Latest, r.ResetLatest = 1, 1 // no part in it
	check("2 of a/* and b, with Latest 1", e.replayPatterns(r), false, []uint64{3, 4, 6, 7})
}

// testLatestPerTopicPages: a LatestPerTopic replay read in pages, each
// resuming from the last event of the page before with the same
// LatestPerTopic, gives the same events as when read whole.
func testLatestPerTopicPages(t *testing.T, f Factory) {
	e := latestSetup(t, f)
	for _, maxTopics := range []int{0, 2} {
		q := transport.PatternQuery{ReplayQuery: transport.ReplayQuery{Topics: []string{"c"}}, Patterns: []string{"a/*", "b"}, MaxTopics: maxTopics, LatestPerTopic: 2}
		whole := e.replayPatterns(q)
		if len(whole.Events) < 3 {
			t.Fatalf("%d events replayed; the test needs more", len(whole.Events))
		}
		what := fmt.Sprintf("at most %d topics, pages of 1 byte", maxTopics)
		wantSeqs(t, what, readPatternPages(t, &e.node, what, q, 1, false), seqs(whole.Events))
	}
}

// testPatternNodes: a pattern watched on one node gets the events
// published on another, and a pattern replay on one node has the events
// that another published, within the seam.
func testPatternNodes(t *testing.T, f Factory) {
	e := open(t, f, big)
	if e.hub.Join == nil {
		t.Skip("the factory's hubs offer no second node (Hub.Join)")
	}
	b := e.join()
	patterns := []string{"news/**", "*/b"}
	b.watchPatterns(patterns...)
	evs := e.publishAll(patternMix...)
	want := matching(evs, 0, patterns)
	got := b.rec.AwaitFunc(t, fmt.Sprintf("the delivery of Seqs %v on node 1", want), func(got []*transport.Event) bool {
		return containsSeqs(got, want)
	})
	wantSeqs(t, "node 1 delivered", matchingEvents(got, patterns...), want)
	wantReplay(t, "node 1 replays node 0's events", b.resumePatterns(transport.FormatID(e.epoch(), 2), patterns), false, matching(evs, 2, patterns))
	b.pt().UnwatchPatterns(patterns)
	checkPatternSeam(t, &e.node, b)
}
