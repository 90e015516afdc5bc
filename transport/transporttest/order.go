package transporttest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// testIDs: ids are FormatID(epoch, seq) with the hub's epoch; Seq starts
// at 1 and grows by one with every event, within a batch too.
func testIDs(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	if h := e.tr.Stats().Head; h != 0 {
		t.Fatalf("a fresh hub's Head is %d, want 0", h)
	}
	ep := e.epoch()
	var rs []transport.Receipt
	for range 3 {
		rs = append(rs, e.publish("a"))
	}
	rs = append(rs, e.publishReq(transport.PublishRequest{Messages: []transport.Message{msg("a"), msg("b"), msg("a", "b")}})...)
	for i, r := range rs {
		gotEp, seq, ok := transport.ParseID(r.ID)
		if !ok || gotEp != ep || seq != uint64(i+1) || r.ID != transport.FormatID(ep, seq) {
			t.Errorf("receipt %d has id %q, want %q", i, r.ID, transport.FormatID(ep, uint64(i+1)))
		}
	}
	if h := e.tr.Stats().Head; h != 6 {
		t.Errorf("Head after 6 events is %d", h)
	}
	if got := e.tr.Stats().Epoch; got != ep {
		t.Errorf("the epoch changed from %q to %q", ep, got)
	}
}

// testEventContent: an event carries its message (id, topics, type, data,
// retry, serialised once), the same when delivered and replayed, and does
// not share the request's topic list.
func testEventContent(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	topics := []string{"a", "b"}
	msgs := []transport.Message{
		{Topics: topics, Type: "greeting", Data: "line 1\nline 2", Retry: 5000},
		{Topics: []string{"b"}, Data: "", Retry: -1},
	}
	rs := e.publishReq(transport.PublishRequest{Messages: msgs})
	topics[0] = "changed after publishing"
	delivered := e.rec.Await(t, 2)
	replayed := e.latest(10, "a", "b").Events
	for i, m := range msgs {
		want := transport.AppendEvent(nil, rs[i].ID, m.Type, m.Retry, m.Data)
		wantTopics := []string{"a", "b"}
		if i == 1 {
			wantTopics = []string{"b"}
		}
		for _, got := range [][]*transport.Event{delivered, replayed} {
			if len(got) != 2 {
				t.Fatalf("%d events, want 2", len(got))
			}
			ev := got[i]
			checkEvent(t, ev)
			if ev.ID != rs[i].ID || string(ev.Wire) != string(want) || !slices.Equal(ev.Topics, wantTopics) {
				t.Errorf("event %d: id %q topics %q wire %q; want id %q topics %q wire %q", i, ev.ID, ev.Topics, ev.Wire, rs[i].ID, wantTopics, want)
			}
		}
		if !slices.Equal(rs[i].Topics, wantTopics) {
			t.Errorf("receipt %d topics %q, want %q", i, rs[i].Topics, wantTopics)
		}
	}
}

// testDeliveryOrder: every event of watched topics reaches the sink once,
// in Seq order, events of several topics included.
func testDeliveryOrder(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	pattern := [][]string{{"a"}, {"b"}, {"a", "c"}, {"b", "c"}, {"a", "b", "c"}}
	var rs []transport.Receipt
	for i := range 30 {
		rs = append(rs, e.publish(pattern[i%len(pattern)]...))
	}
	got := e.rec.Await(t, 30)
	wantSeqs(t, "delivered", seqs(got), span(1, 30))
	for i, ev := range got {
		if i < len(rs) && ev.ID != rs[i].ID {
			t.Errorf("delivery %d is %s, its receipt says %s", i, ev.ID, rs[i].ID)
		}
	}
}

// testConcurrentPublishers: with several publishers at once, every
// receipt's event reaches the sink exactly once, Seqs strictly increase
// at the sink, and each batch keeps consecutive Seqs.
func testConcurrentPublishers(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	const workers, requests = 4, 25
	pattern := [][]string{{"a"}, {"b", "c"}, {"c"}, {"a", "b"}}
	batches := make([][][]transport.Receipt, workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range requests {
				var req transport.PublishRequest
				for j := range i%3 + 1 {
					req.Messages = append(req.Messages, msg(pattern[(w+i+j)%len(pattern)]...))
				}
				rs, err := e.tr.Publish(ctx(t), req)
				if err != nil {
					errs <- fmt.Errorf("publisher %d: %w", w, err)
					return
				}
				batches[w] = append(batches[w], rs)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	awaitDone(t, done, "the publishers")
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	total := 0
	topicsOf := make(map[string][]string)
	for _, bs := range batches {
		for _, rs := range bs {
			for i, r := range rs {
				total++
				topicsOf[r.ID] = r.Topics
				if i > 0 && seqOf(t, r) != seqOf(t, rs[i-1])+1 {
					t.Errorf("batch %v has no consecutive Seqs", receiptSeqs(t, rs))
				}
			}
		}
	}
	got := e.rec.Await(t, total)
	wantSeqs(t, "delivered", seqs(got), span(1, uint64(total)))
	seen := make(map[string]int)
	for _, ev := range got {
		seen[ev.ID]++
		if want, ok := topicsOf[ev.ID]; !ok || !slices.Equal(ev.Topics, want) {
			t.Errorf("delivered %s with topics %q; its receipt: %q (found %v)", ev.ID, ev.Topics, want, ok)
		}
	}
	for id := range topicsOf {
		if seen[id] != 1 {
			t.Errorf("the event of receipt %s was delivered %d times", id, seen[id])
		}
	}
	wantSeqs(t, "retained", e.retained("a", "b", "c"), span(1, uint64(total)))
}

// testBatch: a batch gets consecutive Seqs, is delivered in order and is
// replayed whole.
func testBatch(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	first := e.publish("a")
	batch := []transport.Message{msg("b"), msg("a", "c"), msg("c"), msg("a"), msg("b", "c")}
	rs := e.publishReq(transport.PublishRequest{Messages: batch})
	wantSeqs(t, "batch receipts", receiptSeqs(t, rs), span(2, 6))
	for i, r := range rs {
		if !slices.Equal(r.Topics, batch[i].Topics) {
			t.Errorf("receipt %d has topics %q, want %q", i, r.Topics, batch[i].Topics)
		}
	}
	wantSeqs(t, "delivered", seqs(e.rec.Await(t, 6)), span(1, 6))
	wantReplay(t, "resumed after the first event", e.resume(first.ID, "a", "b", "c"), false, span(2, 6))
	wantReplay(t, "resumed on topic c", e.resume(first.ID, "c"), false, []uint64{3, 4, 6})
}

// testReceipts: a receipt has the event's id and topics and the number of
// subscribers the sink reported for it.
func testReceipts(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	e.rec.SetSubscribers(3)
	rs := e.publishReq(transport.PublishRequest{Messages: []transport.Message{msg("a"), msg("b", "c")}})
	e.rec.SetSubscribers(0)
	r3 := e.publish("c")
	got := e.rec.Await(t, 3)
	for i, r := range append(rs, r3) {
		wantSubs := 3
		if i == 2 {
			wantSubs = 0
		}
		if r.ID != got[i].ID || !slices.Equal(r.Topics, got[i].Topics) || r.Subscribers != wantSubs || r.Repeated {
			t.Errorf("receipt %+v, want id %s, topics %q, %d subscribers, not repeated", r, got[i].ID, got[i].Topics, wantSubs)
		}
	}
}
