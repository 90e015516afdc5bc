package transporttest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// big are limits that evict nothing in a test.
var big = transport.Limits{Events: 100_000, MaxBytes: 1 << 40}

// node is one node of a hub under test, with its sink.
type node struct {
	t   *testing.T
	tr  transport.Transport
	rec *Recorder
}

// env is a hub under test: its first node and its hooks.
type env struct {
	node
	hub Hub
}

// open opens a fresh hub with limits and a new recorder, and watches
// topics on it. It fails the test if the sink is ever interrupted: a
// healthy hub has no reason to.
func open(t *testing.T, f Factory, limits transport.Limits, topics ...string) *env {
	t.Helper()
	rec := NewRecorder(t)
	h := f(t, limits, rec)
	if h.Transport == nil {
		t.Fatal("the factory opened no transport")
	}
	e := &env{node: node{t: t, tr: h.Transport, rec: rec}, hub: h}
	noInterrupts(t, rec)
	if len(topics) > 0 {
		e.watch(topics...)
	}
	return e
}

// join opens another node of e's hub with a new recorder and watches
// topics on it.
func (e *env) join(topics ...string) *node {
	e.t.Helper()
	if e.hub.Join == nil {
		e.t.Fatal("the factory's hub offers no Join")
	}
	rec := NewRecorder(e.t)
	tr := e.hub.Join(e.t, rec)
	if tr == nil {
		e.t.Fatal("Join opened no transport")
	}
	noInterrupts(e.t, rec)
	n := &node{t: e.t, tr: tr, rec: rec}
	if len(topics) > 0 {
		n.watch(topics...)
	}
	return n
}

func noInterrupts(t *testing.T, rec *Recorder) {
	t.Cleanup(func() {
		if in := rec.Interrupts(); len(in) > 0 {
			t.Errorf("the sink was interrupted in a healthy hub: %+v", in)
		}
	})
}

// age lets d pass on the hub's clock: Advance, or real time. A real wait
// here only makes events older; it synchronises nothing.
func (e *env) age(d time.Duration) {
	if e.hub.Advance != nil {
		e.hub.Advance(d)
		return
	}
	time.Sleep(d)
}

// housekeep runs the transport's housekeeping, if it lets the suite.
func (e *env) housekeep() {
	if e.hub.Housekeep != nil {
		e.hub.Housekeep()
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), Patience)
	t.Cleanup(cancel)
	return c
}

func (n *node) watch(topics ...string) {
	n.t.Helper()
	if err := n.tr.Watch(ctx(n.t), topics); err != nil {
		n.t.Fatalf("Watch(%q): %v", topics, err)
	}
}

// msg is a message to topics with data naming them.
func msg(topics ...string) transport.Message {
	return transport.Message{Topics: topics, Data: "to " + strings.Join(topics, ","), Retry: -1}
}

// publish publishes one message to topics and returns its receipt.
func (n *node) publish(topics ...string) transport.Receipt {
	n.t.Helper()
	return n.publishReq(transport.PublishRequest{Messages: []transport.Message{msg(topics...)}})[0]
}

// publishN publishes count messages to topics, one request each, and
// returns their receipts.
func (n *node) publishN(count int, topics ...string) []transport.Receipt {
	n.t.Helper()
	out := make([]transport.Receipt, count)
	for i := range out {
		out[i] = n.publish(topics...)
	}
	return out
}

func (n *node) publishReq(req transport.PublishRequest) []transport.Receipt {
	n.t.Helper()
	rs, err := n.tr.Publish(ctx(n.t), req)
	if err != nil {
		n.t.Fatalf("Publish: %v", err)
	}
	if len(rs) != len(req.Messages) {
		n.t.Fatalf("Publish of %d messages returned %d receipts", len(req.Messages), len(rs))
	}
	return rs
}

func (n *node) replay(q transport.ReplayQuery) transport.Replay {
	n.t.Helper()
	r, err := n.tr.Replay(ctx(n.t), q)
	if err != nil {
		n.t.Fatalf("Replay(%+v): %v", q, err)
	}
	checkReplay(n.t, n.tr, r)
	return r
}

// resume replays topics from the last event id id.
func (n *node) resume(id string, topics ...string) transport.Replay {
	n.t.Helper()
	return n.replay(transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: id})
}

// latest replays the newest count events of topics, without resuming.
func (n *node) latest(count int, topics ...string) transport.Replay {
	n.t.Helper()
	return n.replay(transport.ReplayQuery{Topics: topics, Latest: count})
}

// retained returns the Seqs of every retained event of topics, in order:
// those of each topic (a replay of several starts where none has lost an
// event).
func (n *node) retained(topics ...string) []uint64 {
	n.t.Helper()
	var out []uint64
	for _, topic := range topics {
		out = append(out, seqs(n.latest(1<<30, topic).Events)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// epoch returns the epoch of the hub's ids.
func (n *node) epoch() string {
	n.t.Helper()
	ep := n.tr.Stats().Epoch
	if ep == "" {
		n.t.Fatal("Stats().Epoch is empty")
	}
	return ep
}

// checkReplay checks what holds for every replay: the events are in
// increasing Seq order without duplicates, none above Head, each whole,
// and HeadID is the id of Head.
func checkReplay(t *testing.T, tr transport.Transport, r transport.Replay) {
	t.Helper()
	var last uint64
	for i, ev := range r.Events {
		checkEvent(t, ev)
		if i > 0 && ev.Seq <= last {
			t.Errorf("replayed Seqs %s: not increasing, or with duplicates", fmtSeqs(seqs(r.Events)))
			break
		}
		if ev.Seq > r.Head {
			t.Errorf("replayed Seq %d above the replay's Head %d", ev.Seq, r.Head)
		}
		last = ev.Seq
	}
	ep, seq, ok := transport.ParseID(r.HeadID)
	if !ok || seq != r.Head {
		t.Errorf("HeadID %q is not the id of Head %d", r.HeadID, r.Head)
	}
	if want := tr.Stats().Epoch; ok && ep != want {
		t.Errorf("HeadID %q is not of the hub's epoch %q", r.HeadID, want)
	}
}

// checkEvent checks that ev's id is its Seq's and that it is whole.
func checkEvent(t *testing.T, ev *transport.Event) {
	t.Helper()
	_, seq, ok := transport.ParseID(ev.ID)
	if !ok || seq != ev.Seq || ev.Seq == 0 {
		t.Errorf("event id %q does not name its Seq %d", ev.ID, ev.Seq)
	}
	if len(ev.Topics) == 0 || ev.Time.IsZero() || !strings.HasPrefix(string(ev.Wire), "id: "+ev.ID+"\n") {
		t.Errorf("event %s incomplete: topics %q, time %v, wire %q", ev.ID, ev.Topics, ev.Time, ev.Wire)
	}
}

// seqOf returns the Seq that a receipt's id names.
func seqOf(t *testing.T, r transport.Receipt) uint64 {
	t.Helper()
	_, seq, ok := transport.ParseID(r.ID)
	if !ok {
		t.Fatalf("receipt id %q is not an event id", r.ID)
	}
	return seq
}

func seqs(evs []*transport.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

// receiptSeqs returns the Seqs that receipts' ids name.
func receiptSeqs(t *testing.T, rs []transport.Receipt) []uint64 {
	t.Helper()
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = seqOf(t, r)
	}
	return out
}

// span returns the Seqs from..to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// wantSeqs fails t unless got equals want (nil and empty are equal).
func wantSeqs(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	if len(got) != len(want) || !slices.Equal(got, want) {
		t.Errorf("%s: Seqs %s, want %s", what, fmtSeqs(got), fmtSeqs(want))
	}
}

// fmtSeqs writes runs of consecutive Seqs as ranges: [1-5 5 7-9].
func fmtSeqs(s []uint64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		} else {
			fmt.Fprint(&b, s[i])
		}
		i = j + 1
	}
	b.WriteByte(']')
	return b.String()
}

// wantReplay fails t unless r has the reset flag reset and the Seqs want.
func wantReplay(t *testing.T, what string, r transport.Replay, reset bool, want []uint64) {
	t.Helper()
	if r.Reset != reset {
		t.Errorf("%s: Reset = %v, want %v", what, r.Reset, reset)
	}
	wantSeqs(t, what, seqs(r.Events), want)
}

// sizes returns the Size of each event, by Seq.
func sizes(evs []*transport.Event) map[uint64]int64 {
	out := make(map[uint64]int64, len(evs))
	for _, ev := range evs {
		out[ev.Seq] = ev.Size()
	}
	return out
}

// sizeOf returns the Size that msg has as the event at seq of the hub.
func (n *node) sizeOf(seq uint64, m transport.Message) int64 {
	return transport.NewEvent(n.epoch(), seq, m, time.Now()).Size()
}

// otherEpoch returns an epoch that is not ep.
func otherEpoch(ep string) string {
	if o := transport.NewEpoch(); o != ep {
		return o
	}
	return ep + "0"
}

// awaitDone waits for done to be closed, failing t after Patience.
func awaitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(Patience):
		t.Fatalf("waited %v for %s: deadlocked?", Patience, what)
	}
}
