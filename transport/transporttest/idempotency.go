package transporttest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// keyed is a request of msgs under key and fingerprint, from offset.
func keyed(key, fingerprint string, offset int, msgs ...transport.Message) transport.PublishRequest {
	return transport.PublishRequest{Messages: msgs, Key: key, Fingerprint: fingerprint, Offset: offset}
}

// wantRepeated fails t unless got are the receipts of first, repeated,
// at the first positions of their key.
func wantRepeated(t *testing.T, what string, got, first []transport.Receipt) {
	t.Helper()
	wantRepeatedAt(t, what, got, first, 0)
}

// wantRepeatedAt fails t unless got are the receipts of first, repeated,
// at the positions of their key from offset on: with their subscriber
// counts up to transport.IdempotencyCountedPositions, 0 after.
func wantRepeatedAt(t *testing.T, what string, got, first []transport.Receipt, offset int) {
	t.Helper()
	if len(got) != len(first) {
		t.Fatalf("%s: %d receipts, want %d", what, len(got), len(first))
	}
	bad := 0
	for i, r := range got {
		want := first[i]
		if offset+i >= transport.IdempotencyCountedPositions {
			want.Subscribers = 0
		}
		if r.ID != want.ID || !slices.Equal(r.Topics, want.Topics) || r.Subscribers != want.Subscribers || !r.Repeated {
			if bad++; bad <= 5 {
				t.Errorf("%s: receipt %d (position %d) is %+v, want %+v repeated", what, i, offset+i, r, want)
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d receipts wrong in all", what, bad)
	}
}

// wantFresh fails t unless receipts are of new events with Seqs want.
func wantFresh(t *testing.T, what string, got []transport.Receipt, want []uint64) {
	t.Helper()
	wantSeqs(t, what, receiptSeqs(t, got), want)
	for i, r := range got {
		if r.Repeated {
			t.Errorf("%s: receipt %d (%s) is marked repeated", what, i, r.ID)
		}
	}
}

// wantPublished fails t unless the hub's head is head and the sink got
// exactly the events up to it, checked by publishing one more event and
// awaiting it: nothing else may come first.
func (n *node) wantPublished(what string, head uint64) {
	n.t.Helper()
	if h := n.tr.Stats().Head; h != head {
		n.t.Errorf("%s: Head %d, want %d", what, h, head)
	}
	marker := n.publish("a")
	if s := seqOf(n.t, marker); s != head+1 {
		n.t.Errorf("%s: the next event got Seq %d, want %d", what, s, head+1)
	}
	wantSeqs(n.t, what+": delivered", seqs(n.rec.AwaitSeq(n.t, head+1)), span(1, head+1))
}

// testIdempotentRepeat: the same key and fingerprint again get the first
// receipts, marked repeated, and publish nothing.
func testIdempotentRepeat(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	e.rec.SetSubscribers(2)
	req := keyed("k", "f", 0, msg("a"), msg("b"))
	first := e.publishReq(req)
	wantFresh(t, "first", first, []uint64{1, 2})
	e.rec.SetSubscribers(7)
	wantRepeated(t, "again", e.publishReq(req), first)
	wantRepeated(t, "again, the first message only", e.publishReq(keyed("k", "f", 0, msg("a"))), first[:1])
	wantRepeated(t, "again, the second message only", e.publishReq(keyed("k", "f", 1, msg("b"))), first[1:])
	e.wantPublished("after the repeats", 2)
}

// testKeyMismatch: a key used with another fingerprint is refused with
// ErrKeyMismatch, publishes nothing, and leaves the key's record alone.
func testKeyMismatch(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	first := e.publishReq(keyed("k", "f1", 0, msg("a")))
	for _, req := range []transport.PublishRequest{
		keyed("k", "f2", 0, msg("a")),
		keyed("k", "f2", 1, msg("a")),
		keyed("k", "", 0, msg("a")),
	} {
		rs, err := e.tr.Publish(ctx(t), req)
		if !errors.Is(err, transport.ErrKeyMismatch) {
			t.Errorf("key with fingerprint %q, offset %d: receipts %+v, error %v; want ErrKeyMismatch", req.Fingerprint, req.Offset, rs, err)
		}
	}
	e.wantPublished("after the refusals", 1)
	wantRepeated(t, "the first fingerprint again", e.publishReq(keyed("k", "f1", 0, msg("a"))), first)
}

// testContinuation: a request that goes on from Offset gets the recorded
// receipts for the positions already published and publishes the rest.
func testContinuation(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	m := []transport.Message{msg("a"), msg("b"), msg("a", "b"), msg("b"), msg("a")}
	first := e.publishReq(keyed("s", "g", 0, m[0], m[1]))
	wantFresh(t, "positions 0 and 1", first, []uint64{1, 2})
	next := e.publishReq(keyed("s", "g", 1, m[1], m[2], m[3]))
	wantRepeated(t, "position 1 again", next[:1], first[1:])
	wantFresh(t, "positions 2 and 3", next[1:], []uint64{3, 4})
	all := append(slices.Clone(first), next[1:]...)
	wantRepeated(t, "all from 0", e.publishReq(keyed("s", "g", 0, m[:4]...)), all)
	last := e.publishReq(keyed("s", "g", 3, m[3], m[4]))
	wantRepeated(t, "position 3 again", last[:1], all[3:])
	wantFresh(t, "position 4", last[1:], []uint64{5})
	e.wantPublished("after the continuations", 5)
}

// testConcurrentRepeats: the same keyed request sent several times at
// once publishes once; the others get its receipts (or are refused as in
// flight).
func testConcurrentRepeats(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	checkConcurrentRepeats(t, []*node{&e.node}, 8)
	e.wantPublished("after the repeats", 3)
}

// checkConcurrentRepeats sends count copies of one keyed request of 3
// messages at once, spread over nodes, and checks that exactly one
// published them.
func checkConcurrentRepeats(t *testing.T, nodes []*node, count int) {
	req := keyed("c", "f", 0, msg("a"), msg("b"), msg("a", "b"))
	results := make([][]transport.Receipt, count)
	errs := make([]error, count)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range count {
		wg.Go(func() {
			<-start
			results[i], errs[i] = nodes[i%len(nodes)].tr.Publish(ctx(t), req)
		})
	}
	close(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	awaitDone(t, done, "the publishers")
	fresh := 0
	for i, rs := range results {
		if errs[i] != nil {
			if !errors.Is(errs[i], transport.ErrKeyInFlight) {
				t.Errorf("request %d: %v", i, errs[i])
			}
			continue
		}
		wantSeqs(t, "receipts", receiptSeqs(t, rs), []uint64{1, 2, 3})
		if !rs[0].Repeated {
			fresh++
		}
		for _, r := range rs {
			if r.Repeated != rs[0].Repeated {
				t.Errorf("request %d: receipts %+v partly repeated", i, rs)
			}
		}
	}
	if fresh != 1 {
		t.Errorf("%d of %d identical keyed requests published", fresh, count)
	}
}

// testKeysPerHub: a key used on one hub is unknown to another.
func testKeysPerHub(t *testing.T, f Factory) {
	e1 := open(t, f, big, "a")
	e2 := open(t, f, big, "a")
	first := e1.publishReq(keyed("k", "f", 0, msg("a")))
	wantFresh(t, "hub 1", first, []uint64{1})
	wantFresh(t, "hub 2, the same key with another fingerprint", e2.publishReq(keyed("k", "other", 0, msg("a"))), []uint64{1})
	wantRepeated(t, "hub 1 again", e1.publishReq(keyed("k", "f", 0, msg("a"))), first)
}

// testKeyExpiry: a key is remembered for IdempotencyTTL, then forgotten.
func testKeyExpiry(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	if e.hub.Advance == nil {
		t.Skip("needs a clock the suite can drive: IdempotencyTTL is a day")
	}
	first := e.publishReq(keyed("k", "f", 0, msg("a")))
	e.hub.Advance(transport.IdempotencyTTL - time.Minute)
	wantRepeated(t, "a minute before the key expires", e.publishReq(keyed("k", "f", 0, msg("a"))), first)
	e.hub.Advance(2 * time.Minute)
	e.housekeep()
	wantFresh(t, "a minute after the key expired", e.publishReq(keyed("k", "f", 0, msg("a"))), []uint64{2})
	e.hub.Advance(transport.IdempotencyTTL + time.Minute)
	wantFresh(t, "another fingerprint once the key expired", e.publishReq(keyed("k", "f2", 0, msg("a"))), []uint64{3})
}

// testIdempotencyRecordStaysSmall: a key under which many events were
// published costs a few runs of ids, not a receipt per event; a repeat
// of its early and late positions gets the right ids, and the subscriber
// counts of the first positions.
func testIdempotencyRecordStaysSmall(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 10, MaxBytes: 1 << 40}, "a")
	e.rec.SetSubscribers(3)
	const batches, size = 40, 1000
	batch := make([]transport.Message, size)
	for i := range batch {
		batch[i] = msg("a")
	}
	var all []transport.Receipt
	for b := range batches {
		if b%10 == 5 {
			e.publish("a") // another publisher: the key's ids are several runs
		}
		rs := e.publishReq(keyed("s", "f", b*size, batch...))
		wantFresh(t, "a batch", rs[:1], []uint64{seqOf(t, rs[0])})
		all = append(all, rs...)
	}
	st := e.tr.Stats().Idempotency
	t.Logf("one key over %d events in %d calls, with another publisher between: Stats().Idempotency %+v", batches*size, batches, st)
	if st.Keys != 1 || st.Bytes <= 0 || st.Bytes > 4096 {
		t.Errorf("one key over %d events: Stats().Idempotency %+v, want 1 key of a few hundred bytes", batches*size, st)
	}
	for _, from := range []int{0, 990, 25 * size, 25*size + 999, (batches - 1) * size} {
		got := e.publishReq(keyed("s", "f", from, batch...))
		wantRepeatedAt(t, fmt.Sprintf("the %d events from position %d again", size, from), got, all[from:from+size], from)
	}
	rs := e.publishReq(keyed("s", "f", batches*size-1, msg("a"), msg("a")))
	wantRepeatedAt(t, "the last position again", rs[:1], all[len(all)-1:], batches*size-1)
	wantFresh(t, "the position after the last", rs[1:], []uint64{seqOf(t, all[len(all)-1]) + 1})
	e.wantPublished("after the repeats", seqOf(t, all[len(all)-1])+1)
}

// publishKey publishes one message to "a" under the key numbered n, and
// returns its receipt.
func (e *env) publishKey(n int) transport.Receipt {
	e.t.Helper()
	return e.publishReq(keyed(fmt.Sprintf("key-%04d", n), "f", 0, msg("a")))[0]
}

// testIdempotencyBudgetEvictsOldest: the records stay within the budget;
// the keys used first are forgotten first, and a repeat of a forgotten
// key publishes anew; a key that alone exceeds the budget is kept.
func testIdempotencyBudgetEvictsOldest(t *testing.T, f Factory) {
	lim := transport.Limits{Events: 10, MaxBytes: 1 << 40}
	e := open(t, f, lim, "a")
	first := e.publishKey(0)
	per := e.tr.Stats().Idempotency.Bytes
	if per <= 0 {
		t.Fatalf("Stats().Idempotency.Bytes is %d with one key", per)
	}
	lim.IdempotencyMaxBytes = 10*per + per/2 // ten keys, give or take a byte or two of their ids
	e.tr.SetLimits(lim)
	receipts := []transport.Receipt{first}
	for i := 1; i < 50; i++ {
		receipts = append(receipts, e.publishKey(i))
		if st := e.tr.Stats().Idempotency; st.Bytes > lim.IdempotencyMaxBytes || st.Keys > 10 {
			t.Fatalf("after %d keys: Stats().Idempotency %+v, over the budget of %d bytes (%d a key)", i+1, st, lim.IdempotencyMaxBytes, per)
		}
	}
	if st := e.tr.Stats().Idempotency; st.Keys < 8 {
		t.Errorf("Stats().Idempotency %+v: %d bytes a key, within %d bytes, keep more", st, per, lim.IdempotencyMaxBytes)
	}
	for i := 45; i < 50; i++ {
		wantRepeated(t, fmt.Sprintf("key %d, among the newest", i), []transport.Receipt{e.publishKey(i)}, receipts[i:i+1])
	}
	head := e.tr.Stats().Head
	for i := range 5 {
		wantFresh(t, fmt.Sprintf("key %d, among the oldest, forgotten", i), []transport.Receipt{e.publishKey(i)}, []uint64{head + uint64(i) + 1})
	}
	// a key whose record alone is over the budget is kept, and the others
	// go
	lim.IdempotencyMaxBytes = 1
	e.tr.SetLimits(lim)
	if st := e.tr.Stats().Idempotency; st.Keys != 0 || st.Bytes != 0 {
		t.Errorf("with a budget of 1 byte: Stats().Idempotency %+v, want none", st)
	}
	big := e.publishReq(keyed("big", "f", 0, msg("a"), msg("a")))
	if st := e.tr.Stats().Idempotency; st.Keys != 1 || st.Bytes <= 1 {
		t.Errorf("one key over the budget: Stats().Idempotency %+v, want it kept", st)
	}
	wantRepeated(t, "the key over the budget, again", e.publishReq(keyed("big", "f", 0, msg("a"), msg("a"))), big)
	next := e.publishReq(keyed("big", "f", 1, msg("a"), msg("a")))
	wantRepeatedAt(t, "the key over the budget, continued", next[:1], big[1:], 1)
	wantFresh(t, "the key over the budget, continued", next[1:], []uint64{seqOf(t, big[1]) + 1})
	other := e.publishKey(99)
	if st := e.tr.Stats().Idempotency; st.Keys != 1 {
		t.Errorf("another key over the budget: Stats().Idempotency %+v, want it alone", st)
	}
	wantFresh(t, "the first key over the budget, forgotten", e.publishReq(keyed("big", "f", 0, msg("a"))), []uint64{seqOf(t, other) + 1})
}

// testIdempotencySetLimitsEvicts: a smaller budget forgets the oldest keys
// at once.
func testIdempotencySetLimitsEvicts(t *testing.T, f Factory) {
	lim := transport.Limits{Events: 10, MaxBytes: 1 << 40}
	e := open(t, f, lim, "a")
	var receipts []transport.Receipt
	for i := range 10 {
		receipts = append(receipts, e.publishKey(i))
	}
	st := e.tr.Stats().Idempotency
	if st.Keys != 10 {
		t.Fatalf("Stats().Idempotency %+v, want 10 keys", st)
	}
	lim.IdempotencyMaxBytes = st.Bytes * 3 / 10
	e.tr.SetLimits(lim)
	if got := e.tr.Stats().Idempotency; got.Bytes > lim.IdempotencyMaxBytes || got.Keys < 2 || got.Keys > 3 {
		t.Errorf("budget shrunk to %d bytes from %+v: Stats().Idempotency %+v, want 2 or 3 keys within it", lim.IdempotencyMaxBytes, st, got)
	}
	wantRepeated(t, "the newest key", []transport.Receipt{e.publishKey(9)}, receipts[9:])
	wantFresh(t, "the oldest key", []transport.Receipt{e.publishKey(0)}, []uint64{11})
}
