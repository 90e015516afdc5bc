package transporttest

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// testResumeCurrent: a resume from a current id replays exactly the newer
// retained events of the topics, in order, an event of several of them
// once.
func testResumeCurrent(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	var ids []string
	for _, topics := range [][]string{{"a"}, {"b"}, {"a", "b"}, {"c"}, {"b", "c"}, {"a"}} {
		ids = append(ids, e.publish(topics...).ID)
	}
	r := e.resume(ids[1], "a", "b")
	wantReplay(t, "a and b after 2", r, false, []uint64{3, 5, 6})
	if r.Head != 6 {
		t.Errorf("Head %d, want 6", r.Head)
	}
	wantReplay(t, "a, b and c after 1", e.resume(ids[0], "a", "b", "c"), false, span(2, 6))
	wantReplay(t, "c after 4", e.resume(ids[3], "c"), false, []uint64{5})
	wantReplay(t, "a after 6", e.resume(ids[5], "a"), false, nil)
	wantReplay(t, "a topic never published to, after 3", e.resume(ids[2], "z"), false, nil)
	wantReplay(t, "a and a topic never published to, after 3", e.resume(ids[2], "z", "a"), false, []uint64{6})
}

// testResumeFromHead: the HeadID of a replay is a resumption point that
// loses nothing and replays nothing, on an empty hub too.
func testResumeFromHead(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	empty := e.latest(0, "a")
	if empty.Head != 0 || len(empty.Events) != 0 || empty.Reset {
		t.Fatalf("replay of an empty hub: %+v", empty)
	}
	wantReplay(t, "empty hub, from its head", e.resume(empty.HeadID, "a"), false, nil)
	e.publish("a")
	wantReplay(t, "from the head of the empty hub after one event", e.resume(empty.HeadID, "a"), false, []uint64{1})
	e.publish("b")
	e.publish("a")
	r := e.latest(0, "a")
	if r.Head != 3 {
		t.Errorf("Head %d, want 3", r.Head)
	}
	wantReplay(t, "from the head", e.resume(r.HeadID, "a", "b"), false, nil)
	wantReplay(t, "from the head, a topic never published to", e.resume(r.HeadID, "z"), false, nil)
}

// resetSetup publishes 6 events to a, which keeps 3, and one to b.
func resetSetup(t *testing.T, f Factory) (*env, []string) {
	e := open(t, f, transport.Limits{Events: 3, MaxBytes: 1 << 40}, "a", "b")
	var ids []string
	for range 6 {
		ids = append(ids, e.publish("a").ID)
	}
	ids = append(ids, e.publish("b").ID)
	return e, ids
}

// testResumeResets: a resume that cannot be served completely (a
// malformed id, one of another epoch, one newer than the head, one whose
// following events were evicted) is a reset with the retained events.
func testResumeResets(t *testing.T, f Factory) {
	e, ids := resetSetup(t, f)
	ep := e.epoch()
	resets := []struct{ name, id string }{
		{"evicted after it", ids[0]},
		{"the next evicted", ids[1]},
		{"empty", ""},
		{"no seq", "garbage"},
		{"empty seq", ep + "-"},
		{"seq not a number", ep + "-x"},
		{"signed seq", ep + "-+5"},
		{"no epoch", "-5"},
		{"trailing dash", ids[4] + "-"},
		{"another epoch", transport.FormatID(otherEpoch(ep), 5)},
		{"padded", " " + ids[4]},
		{"just newer than the head", transport.FormatID(ep, 8)},
		{"far newer than the head", transport.FormatID(ep, 99)},
		{"largest seq", transport.FormatID(ep, math.MaxUint64)},
	}
	for _, c := range resets {
		wantReplay(t, fmt.Sprintf("%s (%q)", c.name, c.id), e.resume(c.id, "a"), true, []uint64{4, 5, 6})
	}
	wantReplay(t, "just before the oldest retained", e.resume(ids[2], "a"), false, []uint64{4, 5, 6})
	wantReplay(t, "retained", e.resume(ids[3], "a"), false, []uint64{5, 6})
	wantReplay(t, "newest of a", e.resume(ids[5], "a"), false, nil)
	wantReplay(t, "b lost nothing", e.resume(ids[0], "b"), false, []uint64{7})
	wantReplay(t, "a and b, a lost events", e.resume(ids[0], "a", "b"), true, []uint64{4, 5, 6, 7})
	wantReplay(t, "a and b, from another epoch", e.resume(transport.FormatID(otherEpoch(ep), 1), "b", "a"), true, []uint64{4, 5, 6, 7})
}

// testResetLatest: ResetLatest caps the events of a reset to the newest
// N of the topics, and leaves a complete resume alone.
func testResetLatest(t *testing.T, f Factory) {
	e, ids := resetSetup(t, f)
	q := func(id string, n int, topics ...string) transport.ReplayQuery {
		return transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: id, ResetLatest: n}
	}
	wantReplay(t, "evicted, newest 2", e.replay(q(ids[0], 2, "a")), true, []uint64{5, 6})
	wantReplay(t, "malformed, newest 2", e.replay(q("garbage", 2, "a")), true, []uint64{5, 6})
	wantReplay(t, "a and b, newest 2", e.replay(q(ids[0], 2, "a", "b")), true, []uint64{6, 7})
	wantReplay(t, "newest 10 of 3", e.replay(q(ids[0], 10, "a")), true, []uint64{4, 5, 6})
	wantReplay(t, "complete resume, newest 1", e.replay(q(ids[2], 1, "a")), false, []uint64{4, 5, 6})
}

// testLatest: without Resume, Latest asks for the newest retained events
// of the topics; with Resume, Latest plays no part.
func testLatest(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	var ids []string
	for i := range 10 {
		ids = append(ids, e.publish([]string{"a", "b"}[i%2]).ID)
	}
	wantReplay(t, "newest 3 of a and b", e.latest(3, "a", "b"), false, []uint64{8, 9, 10})
	wantReplay(t, "newest 100 of a", e.latest(100, "a"), false, []uint64{1, 3, 5, 7, 9})
	wantReplay(t, "newest 2 of b", e.latest(2, "b"), false, []uint64{8, 10})
	wantReplay(t, "newest 0", e.latest(0, "a", "b"), false, nil)
	wantReplay(t, "newest of a topic never published to", e.latest(5, "z"), false, nil)
	e.publish("a", "b")
	wantReplay(t, "newest 2 of a and b, one of both", e.latest(2, "a", "b"), false, []uint64{10, 11})
	r := e.replay(transport.ReplayQuery{Topics: []string{"a", "b"}, Resume: true, LastEventID: ids[4], Latest: 1})
	wantReplay(t, "resume with Latest 1", r, false, span(6, 11))
}

// testReplayHead: Replay.Head is the hub's newest event, whatever the
// topics asked for, and the next event gets Seq Head+1 and reaches the
// sink.
func testReplayHead(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	e.publishN(4, "a")
	e.publish("b")
	r := e.latest(10, "a")
	if r.Head != 5 || r.Head != e.tr.Stats().Head || r.HeadID != transport.FormatID(e.epoch(), 5) {
		t.Errorf("Head %d %q, Stats().Head %d; want 5", r.Head, r.HeadID, e.tr.Stats().Head)
	}
	next := e.publish("a")
	if seqOf(t, next) != r.Head+1 {
		t.Errorf("the event after the replay has id %s, want Seq %d", next.ID, r.Head+1)
	}
	e.rec.AwaitSeq(t, r.Head+1)
}

// testSeam: a subscription that watches and replays while events are
// being published gets every event of its topics once: those up to
// Replay.Head in Replay.Events, the later ones from the sink.
func testSeam(t *testing.T, f Factory) {
	e := open(t, f, big)
	checkSeam(t, &e.node, &e.node)
}

// checkSeam runs rounds of a publisher on pub against a subscriber on
// sub, which watches and replays topic a from where the round began after
// the publisher published some of the round's events.
func checkSeam(t *testing.T, pub, sub *node) {
	const rounds, perRound = 16, 12
	pattern := [][]string{{"a"}, {"b"}, {"a", "b"}}
	ep := pub.epoch()
	var published uint64
	for round := range rounds {
		start := published
		var mark int
		var rep transport.Replay
		evs := publishRound(t, pub, round, perRound, func(i int) []string { return pattern[i%3] }, func() {
			mark = sub.rec.Len()
			sub.watch("a")
			rep = sub.resume(transport.FormatID(ep, start), "a")
		})
		published += perRound

		var replayed, live []uint64
		for _, ev := range evs {
			if !slices.Contains(ev.topics, "a") {
				continue
			}
			if ev.seq <= rep.Head {
				replayed = append(replayed, ev.seq)
			} else {
				live = append(live, ev.seq)
			}
		}
		wantReplay(t, fmt.Sprintf("round %d, head %d: replayed", round, rep.Head), rep, false, replayed)
		sub.rec.AwaitFunc(t, fmt.Sprintf("round %d: the delivery of Seqs %v after Watch", round, live), func(evs []*transport.Event) bool {
			return containsSeqs(evs[mark:], live)
		})
		sub.tr.Unwatch([]string{"a"})
	}
}

// publishRound publishes perRound events on pub from a goroutine, the
// topics of the i-th being topics(i), and calls during while it is at
// work: once it published round%perRound of them. It returns the events
// it published, with their Seqs, once they all are and during returned.
func publishRound(t *testing.T, pub *node, round, perRound int, topics func(i int) []string, during func()) []pubEvent {
	t.Helper()
	ready, done := make(chan struct{}), make(chan struct{})
	var evs []pubEvent
	var err error
	go func() {
		defer close(done)
		signal := ready
		defer func() {
			if signal != nil {
				close(signal)
			}
		}()
		for i := range perRound {
			if i == round%perRound {
				close(signal)
				signal = nil
			}
			var r []transport.Receipt
			if r, err = pub.tr.Publish(ctx(t), transport.PublishRequest{Messages: []transport.Message{msg(topics(i)...)}}); err != nil {
				return
			}
			evs = append(evs, pubEvent{seqOf(t, r[0]), topics(i)})
		}
	}()
	<-ready
	during()
	awaitDone(t, done, "the publisher")
	if err != nil {
		t.Fatalf("round %d: Publish: %v", round, err)
	}
	return evs
}

// containsSeqs reports whether evs holds an event of every Seq of want.
func containsSeqs(evs []*transport.Event, want []uint64) bool {
	have := make(map[uint64]bool, len(evs))
	for _, ev := range evs {
		have[ev.Seq] = true
	}
	for _, s := range want {
		if !have[s] {
			return false
		}
	}
	return true
}
