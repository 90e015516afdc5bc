package transporttest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// pagesSetup publishes 40 events of 1 to 400 bytes of data to a, b and
// both, on a hub whose topics keep 12 events each, and returns their ids.
func pagesSetup(t *testing.T, f Factory) (*env, []string) {
	e := open(t, f, transport.Limits{Events: 12, MaxBytes: 1 << 40}, "a", "b")
	pattern := [][]string{{"a"}, {"b"}, {"a", "b"}, {"a"}, {"a"}}
	var ids []string
	for i := range 40 {
		m := msg(pattern[i%len(pattern)]...)
		m.Data = strings.Repeat("x", 1+(i*97)%400)
		ids = append(ids, e.publishReq(transport.PublishRequest{Messages: []transport.Message{m}})[0].ID)
	}
	return e, ids
}

// testReplayPages: a replay read in pages (MaxBytes), each resuming from
// the last event of the one before, gives the same events as the whole
// replay, in order and once each; each page holds at most MaxBytes (or a
// single event) and at least one event, and only the last has no More.
// A first page keeps its Reset; the pages after it resume without one.
func testReplayPages(t *testing.T, f Factory) {
	e, ids := pagesSetup(t, f)
	queries := []struct {
		name string
		q    transport.ReplayQuery
	}{
		{"resume a and b", transport.ReplayQuery{Topics: []string{"a", "b"}, Resume: true, LastEventID: ids[27]}},
		{"resume b", transport.ReplayQuery{Topics: []string{"b"}, Resume: true, LastEventID: ids[30]}},
		{"latest 15 of a and b", transport.ReplayQuery{Topics: []string{"a", "b"}, Latest: 15}},
		{"latest 5 of a", transport.ReplayQuery{Topics: []string{"a"}, Latest: 5}},
		{"a reset of a and b", transport.ReplayQuery{Topics: []string{"a", "b"}, Resume: true, LastEventID: ids[0]}},
		{"a reset of a, newest 7", transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: "bogus", ResetLatest: 7}},
	}
	for _, c := range queries {
		whole := e.replay(c.q)
		if whole.More {
			t.Errorf("%s: a replay without MaxBytes has More", c.name)
		}
		if len(whole.Events) < 3 {
			t.Fatalf("%s: %d events replayed; the test needs more", c.name, len(whole.Events))
		}
		for _, maxBytes := range []int{1, 300, 1000, 4000} {
			what := fmt.Sprintf("%s, pages of %d bytes", c.name, maxBytes)
			got := readPages(t, &e.node, what, c.q, maxBytes, whole.Reset)
			wantSeqs(t, what, got, seqs(whole.Events))
		}
	}
}

// readPages reads the replay of q in pages of maxBytes and returns the
// Seqs of its events.
func readPages(t *testing.T, n *node, what string, q transport.ReplayQuery, maxBytes int, reset bool) []uint64 {
	t.Helper()
	q.MaxBytes = maxBytes
	return readPagesOf(t, what, maxBytes, reset, func(page int, lastID string) transport.Replay {
		if page > 0 {
			q = transport.ReplayQuery{Topics: q.Topics, Resume: true, LastEventID: lastID, MaxBytes: maxBytes}
		}
		return n.replay(q)
	})
}

// readPagesOf reads the pages that next returns, given the page's number
// and the id of the last event before it, until one has no More, checks
// each (Reset on the first page only if reset, at most maxBytes unless a
// single event, not empty while More), and returns the Seqs of their
// events.
func readPagesOf(t *testing.T, what string, maxBytes int, reset bool, next func(page int, lastID string) transport.Replay) []uint64 {
	t.Helper()
	var got []uint64
	lastID := ""
	for page := 0; ; page++ {
		r := next(page, lastID)
		if r.Reset != (reset && page == 0) {
			t.Fatalf("%s: page %d has Reset %v", what, page, r.Reset)
		}
		size := 0
		for _, ev := range r.Events {
			size += len(ev.Wire)
		}
		if len(r.Events) > 1 && size > maxBytes {
			t.Errorf("%s: page %d holds %d events of %d bytes, over %d", what, page, len(r.Events), size, maxBytes)
		}
		got = append(got, seqs(r.Events)...)
		if !r.More {
			return got
		}
		if len(r.Events) == 0 {
			t.Fatalf("%s: page %d is empty and has More", what, page)
		}
		if page > 200 {
			t.Fatalf("%s: more than 200 pages", what)
		}
		lastID = r.Events[len(r.Events)-1].ID
	}
}

// testEvictionsReported: a transport that tells its sink of evictions
// (Sink.Evicted) tells it of every event that left the history, once,
// marked evicted, and of none that is still retained. A transport whose
// history lives elsewhere tells of none, and this case is skipped.
func testEvictionsReported(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 3, MaxBytes: 1 << 40}, "a", "b")
	var seqsPublished []uint64
	for _, topics := range [][]string{{"a"}, {"a", "b"}, {"a"}, {"a"}, {"b"}, {"a"}, {"b"}, {"b"}} {
		seqsPublished = append(seqsPublished, seqOf(t, e.publish(topics...)))
	}
	reported := e.rec.EvictedEvents()
	if len(reported) == 0 {
		t.Skip("the transport reports no evictions to its sink (its history lives elsewhere)")
	}
	retained := e.retained("a", "b")
	var want []uint64
	for _, s := range seqsPublished {
		if !slices.Contains(retained, s) {
			want = append(want, s)
		}
	}
	got := seqs(reported)
	slices.Sort(got)
	wantSeqs(t, "events reported evicted", got, want)
	for _, ev := range reported {
		if !ev.Evicted() {
			t.Errorf("event %s reported evicted is not marked so", ev.ID)
		}
	}
	for _, ev := range e.rec.Events() {
		if ev.Evicted() != !slices.Contains(retained, ev.Seq) {
			t.Errorf("event %s: Evicted() %v, but retained %v", ev.ID, ev.Evicted(), slices.Contains(retained, ev.Seq))
		}
	}
	e.tr.SetLimits(transport.Limits{Events: 1, MaxBytes: 1 << 40})
	if n := len(e.rec.EvictedEvents()) - len(reported); n != len(retained)-2 {
		t.Errorf("shrinking the history to one event a topic reported %d evictions, want %d", n, len(retained)-2)
	}
}

// testResetStartsWhereNoTopicLost: a reset, and a replay of the newest
// events, of several topics start after the newest event that any of the
// topics has lost, so that what follows is whole: a topic that keeps
// older events gives none older than that.
func testResetStartsWhereNoTopicLost(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 2, MaxBytes: 1 << 40}, "a", "b")
	for _, topics := range [][]string{{"b"}, {"b"}, {"a"}, {"a"}, {"a"}, {"b"}} {
		e.publish(topics...)
	}
	// a lost 3; b keeps 2 and 6
	wantReplay(t, "a reset of a and b", e.resume("bogus", "a", "b"), true, []uint64{4, 5, 6})
	wantReplay(t, "a reset of b", e.resume("bogus", "b"), true, []uint64{2, 6})
	wantReplay(t, "newest 10 of a and b", e.latest(10, "a", "b"), false, []uint64{4, 5, 6})
	wantReplay(t, "newest 10 of b", e.latest(10, "b"), false, []uint64{2, 6})
	wantReplay(t, "newest 2 of a and b", e.latest(2, "a", "b"), false, []uint64{5, 6})
}
