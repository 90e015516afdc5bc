package transporttest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// testEvictByCount: each topic keeps its newest Limits.Events events; a
// resume is a reset only where the topics lost events after the id.
func testEvictByCount(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 2, MaxBytes: 1 << 40}, "a", "b")
	var ids []string
	for _, topics := range [][]string{{"a"}, {"a"}, {"a"}, {"b"}, {"a", "b"}} {
		ids = append(ids, e.publish(topics...).ID)
	}
	wantSeqs(t, "a", e.retained("a"), []uint64{3, 5})
	wantSeqs(t, "b", e.retained("b"), []uint64{4, 5})
	wantSeqs(t, "a and b", e.retained("a", "b"), []uint64{3, 4, 5})
	if st := e.tr.Stats(); st.Events != 3 || st.Topics != 2 {
		t.Errorf("Stats: %d events in %d topics, want 3 in 2", st.Events, st.Topics)
	}
	wantReplay(t, "a after 1", e.resume(ids[0], "a"), true, []uint64{3, 5})
	wantReplay(t, "a after 2", e.resume(ids[1], "a"), false, []uint64{3, 5})
	wantReplay(t, "b after 1", e.resume(ids[0], "b"), false, []uint64{4, 5})
	ids = append(ids, e.publish("b").ID)
	wantReplay(t, "b after 3, once 4 is evicted", e.resume(ids[2], "b"), true, []uint64{5, 6})
	wantReplay(t, "b after 4", e.resume(ids[3], "b"), false, []uint64{5, 6})
	wantSeqs(t, "a and b", e.retained("a", "b"), []uint64{3, 5, 6})
}

// testEvictByBytes: the hub's events together fit in Limits.MaxBytes; the
// oldest go first, whatever their topic, and an event of two topics
// counts once.
func testEvictByBytes(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	ep := e.epoch()
	msgs := []transport.Message{msg("a"), msg("b"), msg("a", "b"), msg("c"), msg("c"), msg("a")}
	size := make([]int64, len(msgs)+1) // by Seq
	for i, m := range msgs {
		size[i+1] = e.sizeOf(uint64(i+1), m)
	}
	if size[2] != size[4] || size[4] != size[5] || size[5] != size[6] || size[3] <= size[2] {
		t.Fatalf("sizes %v: the test assumes other ones", size)
	}
	maxBytes := size[2] + size[3] + size[4]
	e.tr.SetLimits(transport.Limits{Events: 1000, MaxBytes: maxBytes})
	for _, m := range msgs[:4] {
		e.publishReq(transport.PublishRequest{Messages: []transport.Message{m}})
	}
	for _, ev := range e.rec.Await(t, 4) {
		if ev.Size() != size[ev.Seq] {
			t.Fatalf("event %d has size %d, want %d", ev.Seq, ev.Size(), size[ev.Seq])
		}
	}
	wantSeqs(t, "retained, the history full", e.retained("a", "b", "c"), []uint64{2, 3, 4})
	if st := e.tr.Stats(); st.Events != 3 || st.Bytes != maxBytes {
		t.Errorf("Stats: %d events of %d bytes, want 3 of %d", st.Events, st.Bytes, maxBytes)
	}
	zero := transport.FormatID(ep, 0)
	wantReplay(t, "a from the start", e.resume(zero, "a"), true, []uint64{3})
	wantReplay(t, "a after 1", e.resume(transport.FormatID(ep, 1), "a"), false, []uint64{3})
	wantReplay(t, "b from the start", e.resume(zero, "b"), false, []uint64{2, 3})

	e.publishReq(transport.PublishRequest{Messages: []transport.Message{msgs[4]}}) // evicts 2
	wantSeqs(t, "retained after 5", e.retained("a", "b", "c"), []uint64{3, 4, 5})
	wantReplay(t, "b from the start, after 5", e.resume(zero, "b"), true, []uint64{3})
	e.publishReq(transport.PublishRequest{Messages: []transport.Message{msgs[5]}}) // evicts 3, of a and b
	wantSeqs(t, "retained after 6", e.retained("a", "b", "c"), []uint64{4, 5, 6})
	if st, want := e.tr.Stats(), size[4]+size[5]+size[6]; st.Events != 3 || st.Bytes != want || st.Topics != 2 {
		t.Errorf("Stats: %d events of %d bytes in %d topics, want 3 of %d in 2", st.Events, st.Bytes, st.Topics, want)
	}
}

// testSharedEvent: an event of two topics counts once, and stays while
// one of them still holds it.
func testSharedEvent(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 1, MaxBytes: 1 << 40}, "a", "b")
	zero := transport.FormatID(e.epoch(), 0)
	e.publish("a", "b")
	e.publish("a") // evicts 1 from a only
	size := sizes(e.rec.Await(t, 2))
	if st := e.tr.Stats(); st.Events != 2 || st.Bytes != size[1]+size[2] || st.Topics != 2 {
		t.Errorf("Stats: %d events of %d bytes in %d topics, want 2 of %d in 2", st.Events, st.Bytes, st.Topics, size[1]+size[2])
	}
	wantSeqs(t, "b", e.retained("b"), []uint64{1})
	wantSeqs(t, "a", e.retained("a"), []uint64{2})
	wantSeqs(t, "a and b", e.retained("a", "b"), []uint64{1, 2})
	wantReplay(t, "b from the start", e.resume(zero, "b"), false, []uint64{1})
	wantReplay(t, "a from the start", e.resume(zero, "a"), true, []uint64{2})
	e.publish("b") // evicts 1 from b, and so from the hub
	size = sizes(e.rec.Await(t, 3))
	if st := e.tr.Stats(); st.Events != 2 || st.Bytes != size[2]+size[3] {
		t.Errorf("Stats: %d events of %d bytes, want 2 of %d", st.Events, st.Bytes, size[2]+size[3])
	}
	wantSeqs(t, "a and b", e.retained("a", "b"), []uint64{2, 3})
}

// testTopicNamesCount: an event's topic names count in its bytes.
func testTopicNamesCount(t *testing.T, f Factory) {
	long := strings.Repeat("t", 1000)
	e := open(t, f, big, long)
	m := transport.Message{Topics: []string{long}, Data: "x", Retry: -1}
	size := e.sizeOf(1, m)
	e.tr.SetLimits(transport.Limits{Events: 1000, MaxBytes: 2*size + size/2})
	for range 5 {
		e.publishReq(transport.PublishRequest{Messages: []transport.Message{m}})
	}
	wantSeqs(t, "retained", e.retained(long), []uint64{4, 5})
	if st := e.tr.Stats(); st.Events != 2 || st.Bytes != 2*size {
		t.Errorf("Stats: %d events of %d bytes, want 2 of %d", st.Events, st.Bytes, 2*size)
	}
}

// testEvictByAge: an event older than Limits.TTL is dropped; a resume
// from before it is a reset, one from it is not.
func testEvictByAge(t *testing.T, f Factory) {
	const ttl, slack = time.Second, 50 * time.Millisecond
	e := open(t, f, transport.Limits{Events: 1000, TTL: ttl, MaxBytes: 1 << 40}, "a")
	driven := e.hub.Advance != nil
	zero := transport.FormatID(e.epoch(), 0)
	t0 := time.Now()
	e1 := e.publish("a")
	e.age(ttl * 6 / 10)
	t1 := time.Now()
	e2 := e.publish("a")
	if driven || time.Since(t0) < ttl-slack {
		wantSeqs(t, "both young", e.retained("a"), []uint64{1, 2})
	}
	e.age(ttl / 2) // 1 is older than ttl now, 2 is not
	retained := e.awaitRetained("the first event to expire", ttl, func(s []uint64) bool { return !slices.Contains(s, 1) }, "a")
	if !driven && time.Since(t0) < ttl-slack {
		t.Errorf("the first event expired after %v, before its TTL of %v", time.Since(t0), ttl)
	}
	if driven || time.Since(t1) < ttl-slack {
		wantSeqs(t, "the second event still young", retained, []uint64{2})
		wantReplay(t, "from the expired event", e.resume(e1.ID, "a"), false, []uint64{2})
		if st := e.tr.Stats(); st.Events != 1 || st.Topics != 1 {
			t.Errorf("Stats: %d events in %d topics, want 1 in 1", st.Events, st.Topics)
		}
	}
	if r := e.resume(zero, "a"); !r.Reset || slices.Contains(seqs(r.Events), 1) {
		t.Errorf("resume from before the expired event: Reset %v, Seqs %v", r.Reset, seqs(r.Events))
	}

	e.age(ttl * 6 / 10)
	e.awaitRetained("the second event to expire", ttl, func(s []uint64) bool { return len(s) == 0 }, "a")
	if !driven && time.Since(t1) < ttl-slack {
		t.Errorf("the second event expired after %v, before its TTL of %v", time.Since(t1), ttl)
	}
	if st := e.tr.Stats(); st.Events != 0 || st.Bytes != 0 || st.Topics != 0 {
		t.Errorf("Stats with every event expired: %+v", st)
	}
	wantReplay(t, "after 1, with 2 expired", e.resume(e1.ID, "a"), true, nil)
	wantReplay(t, "after 2", e.resume(e2.ID, "a"), false, nil)
}

// awaitRetained returns the retained Seqs of topics once done accepts
// them: at once on a driven clock, within wait plus Patience on real time.
func (e *env) awaitRetained(what string, wait time.Duration, done func([]uint64) bool, topics ...string) []uint64 {
	e.t.Helper()
	deadline := time.Now().Add(wait + Patience)
	for {
		s := e.retained(topics...)
		if done(s) {
			return s
		}
		if e.hub.Advance != nil {
			e.t.Fatalf("waiting for %s: retained %v on a clock past it", what, s)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waited %v for %s: retained %v", wait+Patience, what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testHistoryZero: a hub that keeps no events still delivers them, and a
// resume is a reset unless nothing was published since the id.
func testHistoryZero(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 0, MaxBytes: 1 << 40}, "a")
	e1 := e.publish("a")
	e.publish("a")
	e.rec.Await(t, 2)
	if st := e.tr.Stats(); st.Events != 0 || st.Bytes != 0 || st.Topics != 0 || st.Head != 2 {
		t.Errorf("Stats: %+v, want no events, Head 2", st)
	}
	wantReplay(t, "after 1", e.resume(e1.ID, "a"), true, nil)
	wantReplay(t, "newest", e.latest(5, "a"), false, nil)
	head := e.latest(0, "a").HeadID
	wantReplay(t, "from the head", e.resume(head, "a"), false, nil)
}

// idleTopics is how many topics testIdleTopics empties to make a
// transport forget idle topics; more than the memory transport keeps.
const idleTopics = 20_000

// testIdleTopics: a topic whose events were all evicted does not make an
// older id look resumable, also once the transport forgot many such
// topics.
func testIdleTopics(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 1, MaxBytes: 1 << 40}, "t", "other")
	e1 := e.publish("other")
	e2 := e.publish("t")
	e3 := e.publish("t") // evicts 2
	e.tr.SetLimits(transport.Limits{Events: 0, MaxBytes: 1 << 40})
	if st := e.tr.Stats(); st.Events != 0 || st.Topics != 0 {
		t.Errorf("Stats: %d events in %d topics, want none", st.Events, st.Topics)
	}
	check := func(when string) {
		wantReplay(t, when+": t after 1", e.resume(e1.ID, "t"), true, nil)
		wantReplay(t, when+": t after 2", e.resume(e2.ID, "t"), true, nil)
		head := e.latest(0, "t").HeadID
		wantReplay(t, when+": t from the head", e.resume(head, "t"), false, nil)
		wantReplay(t, when+": an idle topic from the head", e.resume(head, "idle-00007"), false, nil)
	}
	check("emptied")
	wantReplay(t, "t after 3", e.resume(e3.ID, "t"), false, nil)
	wantReplay(t, "a topic never published to", e.resume(e1.ID, "never"), false, nil)

	const perBatch = 1000
	for b := range idleTopics / perBatch {
		msgs := make([]transport.Message, perBatch)
		for i := range msgs {
			msgs[i] = transport.Message{Topics: []string{fmt.Sprintf("idle-%05d", b*perBatch+i)}, Data: "x", Retry: -1}
		}
		e.publishReq(transport.PublishRequest{Messages: msgs})
	}
	e.housekeep()
	check(fmt.Sprintf("after %d idle topics", idleTopics))
	if st := e.tr.Stats(); st.Events != 0 || st.Topics != 0 {
		t.Errorf("Stats: %d events in %d topics, want none", st.Events, st.Topics)
	}
}

// testSetLimits: shrinking the limits trims at once, by count, bytes and
// age; the sequence goes on.
func testSetLimits(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	a := e.publishN(50, "a")
	e.publishN(5, "b")
	size := sizes(e.rec.Await(t, 55))

	e.tr.SetLimits(transport.Limits{Events: 10, MaxBytes: 1 << 40})
	wantSeqs(t, "a, 10 kept", e.retained("a"), span(41, 50))
	wantSeqs(t, "b, 10 kept", e.retained("b"), span(51, 55))
	if st := e.tr.Stats(); st.Events != 15 {
		t.Errorf("Stats: %d events, want 15", st.Events)
	}

	var fit int64
	for s := uint64(51); s <= 55; s++ {
		fit += size[s]
	}
	e.tr.SetLimits(transport.Limits{Events: 10, MaxBytes: fit})
	wantSeqs(t, "a and b, bytes for 5", e.retained("a", "b"), span(51, 55))
	if st := e.tr.Stats(); st.Events != 5 || st.Bytes != fit {
		t.Errorf("Stats: %d events of %d bytes, want 5 of %d", st.Events, st.Bytes, fit)
	}
	wantReplay(t, "a after its last event", e.resume(a[49].ID, "a"), false, nil)
	wantReplay(t, "a after its last but one", e.resume(a[48].ID, "a"), true, nil)

	e.age(300 * time.Millisecond)
	e.tr.SetLimits(transport.Limits{Events: 10, MaxBytes: 1 << 40, TTL: 100 * time.Millisecond})
	wantSeqs(t, "a and b, older than the TTL", e.retained("a", "b"), nil)
	if st := e.tr.Stats(); st.Events != 0 || st.Bytes != 0 {
		t.Errorf("Stats: %d events of %d bytes, want none", st.Events, st.Bytes)
	}

	e.tr.SetLimits(big)
	if r := e.publish("a"); seqOf(t, r) != 56 {
		t.Errorf("the sequence went on at %s, want Seq 56", r.ID)
	}
	wantSeqs(t, "a", e.retained("a"), []uint64{56})
}

// testStats: Stats report the topics with events, the events and their
// bytes, the head, the epoch and that the transport is up.
func testStats(t *testing.T, f Factory) {
	e := open(t, f, big)
	st := e.tr.Stats()
	if st.Topics != 0 || st.Events != 0 || st.Bytes != 0 || st.Head != 0 || st.Epoch == "" || !st.State.Up || st.State.WatchedTopics != 0 {
		t.Errorf("Stats of a fresh hub: %+v", st)
	}
	e.watch("a", "b", "c")
	rs := []transport.Receipt{e.publish("a"), e.publish("a", "b"), e.publish("c")}
	size := sizes(e.rec.Await(t, 3))
	ep, _, _ := transport.ParseID(rs[0].ID)
	want := func(what string, topics, events int, bytes int64) {
		t.Helper()
		st := e.tr.Stats()
		if st.Topics != topics || st.Events != events || st.Bytes != bytes || st.Head != 3 || st.Epoch != ep || !st.State.Up {
			t.Errorf("Stats %s: %+v; want %d topics, %d events, %d bytes, head 3, epoch %q, up",
				what, st, topics, events, bytes, ep)
		}
	}
	want("after 3 events", 3, 3, size[1]+size[2]+size[3])
	e.tr.SetLimits(transport.Limits{Events: 1, MaxBytes: 1 << 40})
	want("keeping 1 per topic", 3, 2, size[2]+size[3])
	e.tr.SetLimits(transport.Limits{Events: 0, MaxBytes: 1 << 40})
	want("keeping none", 0, 0, 0)
}
