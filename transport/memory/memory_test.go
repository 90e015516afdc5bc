package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// recorder is a sink that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []*transport.Event
}

func (r *recorder) Deliver(ev *transport.Event) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return 1
}

func (r *recorder) Interrupt([]string, string) {}

func (r *recorder) last() *transport.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[len(r.events)-1]
}

// clock is a settable time source.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func open(t *testing.T, limits transport.Limits) (*Transport, *recorder, *clock) {
	t.Helper()
	c := &clock{now: time.Unix(1_700_000_000, 0)}
	tr := &Transport{now: c.Now}
	rec := new(recorder)
	if err := tr.Open("test", limits, rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, rec, c
}

func publish(t *testing.T, tr *Transport, data string, topics ...string) *transport.Event {
	t.Helper()
	_, err := tr.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{{Topics: topics, Data: data, Retry: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	return tr.sink.(*recorder).last()
}

func seqs(events []*transport.Event) []uint64 {
	out := make([]uint64, len(events))
	for i, ev := range events {
		out[i] = ev.Seq
	}
	return out
}

func replay(t *testing.T, tr *Transport, q transport.ReplayQuery) transport.Replay {
	t.Helper()
	r, err := tr.Replay(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var big = transport.Limits{Events: 1000, MaxBytes: 1 << 30}

func TestPublishAssignsIncreasingIDsAndDelivers(t *testing.T) {
	tr, rec, _ := open(t, big)
	rs, err := tr.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{
		{Topics: []string{"a"}, Data: "1", Retry: -1},
		{Topics: []string{"a", "b"}, Data: "2", Retry: -1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].ID != rec.events[0].ID || rs[1].ID != rec.events[1].ID || rs[0].Subscribers != 1 {
		t.Fatalf("receipts %+v %+v", rs[0], rs[1])
	}
	if got := seqs(rec.events); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("delivered %v", got)
	}
	epoch, seq, ok := transport.ParseID(rs[1].ID)
	if !ok || epoch != tr.epoch || seq != 2 {
		t.Fatalf("id %q", rs[1].ID)
	}
}

func TestResumeMultiTopicInOrderWithoutDuplicates(t *testing.T) {
	tr, _, _ := open(t, big)
	publish(t, tr, "1", "a")
	e2 := publish(t, tr, "2", "b")
	publish(t, tr, "3", "a", "b")
	publish(t, tr, "4", "c")
	publish(t, tr, "5", "b", "c")
	publish(t, tr, "6", "a")
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a", "b"}, Resume: true, LastEventID: e2.ID})
	if r.Reset {
		t.Fatal("unexpected reset")
	}
	if got := seqs(r.Events); !slices.Equal(got, []uint64{3, 5, 6}) {
		t.Fatalf("replayed %v, want [3 5 6]", got)
	}
	if r.Head != 6 || r.HeadID != transport.FormatID(tr.epoch, 6) {
		t.Fatalf("head %d %q", r.Head, r.HeadID)
	}
}

func TestLatest(t *testing.T) {
	tr, _, _ := open(t, big)
	for i := range 10 {
		publish(t, tr, fmt.Sprint(i), []string{"a", "b"}[i%2])
	}
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a", "b"}, Latest: 3})
	if got := seqs(r.Events); !slices.Equal(got, []uint64{8, 9, 10}) {
		t.Fatalf("latest %v", got)
	}
	r = replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Latest: 100})
	if got := seqs(r.Events); !slices.Equal(got, []uint64{1, 3, 5, 7, 9}) {
		t.Fatalf("latest of a %v", got)
	}
}

func TestResetCases(t *testing.T) {
	tr, _, _ := open(t, transport.Limits{Events: 3, MaxBytes: 1 << 30})
	var events []*transport.Event
	for i := range 6 {
		events = append(events, publish(t, tr, fmt.Sprint(i), "a"))
	}
	publish(t, tr, "other", "b")
	tests := []struct {
		name  string
		id    string
		reset bool
		want  []uint64
	}{
		{"retained", events[3].ID, false, []uint64{5, 6}},
		{"newest", events[5].ID, false, nil},
		{"evicted", events[1].ID, true, []uint64{4, 5, 6}},
		{"just before the oldest retained", events[2].ID, false, []uint64{4, 5, 6}},
		{"malformed", "garbage", true, []uint64{4, 5, 6}},
		{"empty seq", tr.epoch + "-", true, []uint64{4, 5, 6}},
		{"other incarnation", "0badf00d-5", true, []uint64{4, 5, 6}},
		{"from the future", transport.FormatID(tr.epoch, 99), true, []uint64{4, 5, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: tt.id})
			if r.Reset != tt.reset {
				t.Errorf("reset = %v, want %v", r.Reset, tt.reset)
			}
			if got := seqs(r.Events); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("events %v, want %v", got, tt.want)
			}
		})
	}
	// topic b lost nothing: a resume from the very first event is complete
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"b"}, Resume: true, LastEventID: events[0].ID})
	if r.Reset || !slices.Equal(seqs(r.Events), []uint64{7}) {
		t.Fatalf("topic b: reset %v events %v", r.Reset, seqs(r.Events))
	}
}

func TestHistoryZeroKeepsNone(t *testing.T) {
	tr, rec, _ := open(t, transport.Limits{Events: 0, MaxBytes: 1 << 30})
	e1 := publish(t, tr, "1", "a")
	publish(t, tr, "2", "a")
	if len(rec.events) != 2 {
		t.Fatal("events must still be delivered live")
	}
	if st := tr.Stats(); st.Events != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v", st)
	}
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: e1.ID})
	if !r.Reset || len(r.Events) != 0 {
		t.Fatalf("reset %v events %v", r.Reset, seqs(r.Events))
	}
	// nothing published since: resuming from the newest loses nothing
	r = replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: r.HeadID})
	if r.Reset {
		t.Fatal("resume from head must not reset")
	}
}

func TestTTL(t *testing.T) {
	tr, _, c := open(t, transport.Limits{Events: 100, TTL: time.Minute, MaxBytes: 1 << 30})
	e1 := publish(t, tr, "old", "a")
	c.now = c.now.Add(40 * time.Second)
	publish(t, tr, "new", "a")
	c.now = c.now.Add(30 * time.Second) // the first is 70s old now
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Latest: 10})
	if got := seqs(r.Events); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after expiry %v", got)
	}
	r = replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: transport.FormatID(tr.epoch, 0)})
	if !r.Reset {
		t.Fatal("a resume from before an expired event must reset")
	}
	r = replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: e1.ID})
	if r.Reset || !slices.Equal(seqs(r.Events), []uint64{2}) {
		t.Fatalf("resume from the expired event itself: reset %v %v", r.Reset, seqs(r.Events))
	}
	if st := tr.Stats(); st.Events != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMaxBytesEvictsOldestAcrossTopics(t *testing.T) {
	tr, _, _ := open(t, big)
	e1 := publish(t, tr, "x", "a")
	size := e1.Size() // every one-topic event below has the same size
	tr.SetLimits(transport.Limits{Events: 1000, MaxBytes: 3*size + 25})
	publish(t, tr, "x", "b")
	two := publish(t, tr, "x", "a", "b")
	if two.Size() != size+25 { // a one-letter topic more
		t.Fatalf("sizes %d and %d", size, two.Size())
	}
	publish(t, tr, "x", "c")
	st := tr.Stats()
	if st.Events != 3 || st.Bytes != 3*size+25 {
		t.Fatalf("stats %+v, want 3 events of %d bytes", st, 3*size+25)
	}
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a", "b", "c"}, Latest: 10})
	if got := seqs(r.Events); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("retained %v", got)
	}
}

func TestSharedEventCountsOnceAndStaysWhileATopicHoldsIt(t *testing.T) {
	tr, _, _ := open(t, transport.Limits{Events: 1, MaxBytes: 1 << 30})
	shared := publish(t, tr, "s", "a", "b")
	a2 := publish(t, tr, "a2", "a") // evicts the shared event from a only
	st := tr.Stats()
	if st.Events != 2 || st.Bytes != shared.Size()+a2.Size() {
		t.Fatalf("stats %+v", st)
	}
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"b"}, Latest: 5})
	if got := seqs(r.Events); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("b %v", got)
	}
	publish(t, tr, "b2", "b")
	if st := tr.Stats(); st.Events != 2 {
		t.Fatalf("after b2: %+v", st)
	}
}

func TestSetLimitsShrinksInPlace(t *testing.T) {
	tr, _, _ := open(t, big)
	for i := range 50 {
		publish(t, tr, fmt.Sprint(i), "a")
	}
	tr.SetLimits(transport.Limits{Events: 10, MaxBytes: 1 << 30})
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"a"}, Latest: 100})
	if len(r.Events) != 10 || r.Events[0].Seq != 41 {
		t.Fatalf("after shrink %v", seqs(r.Events))
	}
	if e := publish(t, tr, "next", "a"); e.Seq != 51 {
		t.Fatalf("sequence continues at %d", e.Seq)
	}
}

func TestBoundedWithTopicChurn(t *testing.T) {
	tr, _, _ := open(t, transport.Limits{Events: 1, MaxBytes: 1 << 30})
	for i := range 3 * maxIdleTopics {
		publish(t, tr, "x", fmt.Sprint("t", i))
		publish(t, tr, "y", fmt.Sprint("t", i)) // evicts x
	}
	tr.SetLimits(transport.Limits{Events: 0, MaxBytes: 1 << 30})
	tr.mu.Lock()
	tr.sweepIdleTopics()
	n, logLen, cap := len(tr.topics), len(tr.log)-tr.logHead, cap(tr.log)
	tr.mu.Unlock()
	if n != 0 || logLen >= 64 || cap > 4096 {
		t.Fatalf("%d topic records and %d log entries (capacity %d) left", n, logLen, cap)
	}
	// a forgotten topic errs on the side of a reset
	r := replay(t, tr, transport.ReplayQuery{Topics: []string{"t5"}, Resume: true, LastEventID: transport.FormatID(tr.epoch, 1)})
	if !r.Reset {
		t.Fatal("resume on a forgotten topic must reset")
	}
}

func TestClosed(t *testing.T) {
	tr, _, _ := open(t, big)
	_ = tr.Close()
	if _, err := tr.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"a"}}}}); err != transport.ErrClosed {
		t.Fatalf("publish after close: %v", err)
	}
}
