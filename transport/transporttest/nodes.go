package transporttest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// nodeCases are the subtests of a hub shared by several nodes; they run
// only when the Factory's hubs offer Join.
var nodeCases = []testCase{
	{"ShareOneSequenceAndOneOrder", testNodesOrder},
	{"ReplayEventsOfOtherNodes", testNodesReplay},
	{"ReplayAndLiveEventsMeetAtHeadAcrossNodes", testNodesSeam},
	{"ReceiptsCountLocalSubscribers", testNodesReceipts},
	{"IdempotencyKeysAreShared", testNodesIdempotency},
	{"HistoryLimitsHoldAcrossNodes", testNodesLimits},
	{"WatchedTopicsArePerNode", testNodesWatch},
	{"ClosingANodeLeavesTheOthers", testNodesClose},
	{"DisconnectReachesEveryNodeOnce", testNodesDisconnect}, // disconnect.go
}

// testNodesOrder: with publishers on both nodes at once, each node's sink
// gets every event once, in the one order of the hub.
func testNodesOrder(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b", "c")
	nodes := []*node{&e.node, e.join("a", "b", "c")}
	const workers, requests = 4, 20
	pattern := [][]string{{"a"}, {"b", "c"}, {"c"}, {"a", "b"}}
	receipts := make([][]transport.Receipt, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			n := nodes[w%len(nodes)]
			for i := range requests {
				var req transport.PublishRequest
				for j := range i%2 + 1 {
					req.Messages = append(req.Messages, msg(pattern[(w+i+j)%len(pattern)]...))
				}
				rs, err := n.tr.Publish(ctx(t), req)
				if err != nil {
					errs[w] = fmt.Errorf("publisher %d: %w", w, err)
					return
				}
				for j := 1; j < len(rs); j++ {
					if seqOf(t, rs[j]) != seqOf(t, rs[j-1])+1 {
						errs[w] = fmt.Errorf("publisher %d: batch %v has no consecutive Seqs", w, receiptSeqs(t, rs))
					}
				}
				receipts[w] = append(receipts[w], rs...)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	awaitDone(t, done, "the publishers")
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]bool)
	for _, rs := range receipts {
		for _, r := range rs {
			ids[r.ID] = true
		}
	}
	total := len(ids)
	if total != workers*requests*3/2 {
		t.Errorf("%d distinct ids for %d events", total, workers*requests*3/2)
	}
	var first []*transport.Event
	for i, n := range nodes {
		got := n.rec.Await(t, total)
		wantSeqs(t, fmt.Sprintf("node %d delivered", i), seqs(got), span(1, uint64(total)))
		for _, ev := range got {
			if !ids[ev.ID] {
				t.Errorf("node %d delivered %s, which no receipt names", i, ev.ID)
			}
		}
		if i == 0 {
			first = got
			continue
		}
		for j, ev := range got {
			if j < len(first) && (ev.ID != first[j].ID || string(ev.Wire) != string(first[j].Wire) || !slices.Equal(ev.Topics, first[j].Topics)) {
				t.Errorf("node %d delivered %s %q %q where node 0 delivered %s %q %q", i, ev.ID, ev.Topics, ev.Wire, first[j].ID, first[j].Topics, first[j].Wire)
			}
		}
	}
}

// testNodesReplay: a node replays and resumes from the events that
// another published, with the same epoch and head.
func testNodesReplay(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	b := e.join("a", "b")
	var ids []string
	for _, topics := range [][]string{{"a"}, {"b"}, {"a", "b"}} {
		ids = append(ids, e.publish(topics...).ID)
	}
	ids = append(ids, b.publish("a").ID)
	for i, n := range []*node{&e.node, b} {
		what := fmt.Sprintf("node %d", i)
		if st := n.tr.Stats(); st.Head != 4 || st.Epoch != e.epoch() || st.Events != 4 || st.Topics != 2 {
			t.Errorf("%s: Stats %+v, want head 4, epoch %q, 4 events in 2 topics", what, st, e.epoch())
		}
		wantReplay(t, what+": a after 1", n.resume(ids[0], "a"), false, []uint64{3, 4})
		wantReplay(t, what+": a and b after 1", n.resume(ids[0], "a", "b"), false, []uint64{2, 3, 4})
		wantReplay(t, what+": newest 2", n.latest(2, "a", "b"), false, []uint64{3, 4})
		wantReplay(t, what+": from the head", n.resume(ids[3], "a", "b"), false, nil)
		for j, ev := range n.latest(10, "a", "b").Events {
			if ev.ID != ids[j] {
				t.Errorf("%s: replayed %s, want %s", what, ev.ID, ids[j])
			}
		}
	}
}

// testNodesSeam: a subscription on one node, while another publishes,
// gets every event once, replayed or live.
func testNodesSeam(t *testing.T, f Factory) {
	e := open(t, f, big)
	checkSeam(t, &e.node, e.join())
}

// testNodesReceipts: a receipt counts the subscribers of the node that
// published, and every node delivers the event.
func testNodesReceipts(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	b := e.join("a")
	e.rec.SetSubscribers(3)
	b.rec.SetSubscribers(5)
	ra := e.publish("a")
	rb := b.publish("a")
	if ra.Subscribers != 3 || rb.Subscribers != 5 {
		t.Errorf("receipts count %d and %d subscribers, want 3 (node 0) and 5 (node 1)", ra.Subscribers, rb.Subscribers)
	}
	wantSeqs(t, "node 0 delivered", seqs(e.rec.AwaitSeq(t, 2)), []uint64{1, 2})
	wantSeqs(t, "node 1 delivered", seqs(b.rec.AwaitSeq(t, 2)), []uint64{1, 2})
}

// testNodesIdempotency: a key used on one node is known on the others:
// repeats, mismatches, continuations and concurrent repeats.
func testNodesIdempotency(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	b := e.join("a", "b")
	checkConcurrentRepeats(t, []*node{&e.node, b}, 8)
	first := e.publishReq(keyed("k", "f", 0, msg("a"), msg("b")))
	wantFresh(t, "node 0", first, []uint64{4, 5})
	wantRepeated(t, "node 1, the same request", b.publishReq(keyed("k", "f", 0, msg("a"), msg("b"))), first)
	if _, err := b.tr.Publish(ctx(t), keyed("k", "other", 0, msg("a"))); !errors.Is(err, transport.ErrKeyMismatch) {
		t.Errorf("node 1, another fingerprint: %v, want ErrKeyMismatch", err)
	}
	next := b.publishReq(keyed("k", "f", 1, msg("b"), msg("a")))
	wantRepeated(t, "node 1, position 1 again", next[:1], first[1:])
	wantFresh(t, "node 1, position 2", next[1:], []uint64{6})
	e.wantPublished("node 0, after the repeats", 6)
	wantSeqs(t, "node 1 delivered", seqs(b.rec.AwaitSeq(t, 7)), span(1, 7))
}

// testNodesLimits: the history limits hold for the hub, whichever node
// publishes; both nodes see the same history.
func testNodesLimits(t *testing.T, f Factory) {
	e := open(t, f, transport.Limits{Events: 2, MaxBytes: 1 << 40}, "a")
	b := e.join("a")
	var ids []string
	for i := range 5 {
		ids = append(ids, []*node{&e.node, b}[i%2].publish("a").ID)
	}
	for i, n := range []*node{&e.node, b} {
		what := fmt.Sprintf("node %d", i)
		wantSeqs(t, what, n.retained("a"), []uint64{4, 5})
		wantReplay(t, what+": after 2", n.resume(ids[1], "a"), true, []uint64{4, 5})
		wantReplay(t, what+": after 3", n.resume(ids[2], "a"), false, []uint64{4, 5})
		if st := n.tr.Stats(); st.Events != 2 || st.Head != 5 {
			t.Errorf("%s: Stats: %d events, head %d; want 2, 5", what, st.Events, st.Head)
		}
	}
}

// testNodesWatch: each node counts the topics it watches itself.
func testNodesWatch(t *testing.T, f Factory) {
	e := open(t, f, big, "a", "b")
	b := e.join("c")
	if na, nb := e.tr.Stats().State.WatchedTopics, b.tr.Stats().State.WatchedTopics; na != 2 || nb != 1 {
		t.Errorf("watched topics: %d and %d, want 2 and 1", na, nb)
	}
	r := e.publish("c")
	b.rec.AwaitSeq(t, seqOf(t, r))
}

// testNodesClose: closing one node stops its sink (a disconnect request
// made on another node does not reach it) and refuses its calls; the
// other nodes go on.
func testNodesClose(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	b := e.join("a")
	e.publish("a")
	b.rec.AwaitSeq(t, 1)
	if err := b.tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	b.rec.Closed()
	if _, err := b.tr.Publish(ctx(t), transport.PublishRequest{Messages: []transport.Message{msg("a")}}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish on the closed node: %v, want ErrClosed", err)
	}
	if _, err := b.tr.Disconnect(ctx(t), transport.Disconnect{Topic: "a"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Disconnect on the closed node: %v, want ErrClosed", err)
	}
	e.rec.SetDisconnected(1)
	if n, err := e.tr.Disconnect(ctx(t), transport.Disconnect{Topic: "a"}); err != nil || n != 1 {
		t.Errorf("Disconnect on the open node: %d, %v; want 1, nil", n, err)
	}
	r := e.publish("a")
	wantSeqs(t, "the open node delivered", seqs(e.rec.AwaitSeq(t, seqOf(t, r))), []uint64{1, 2})
	wantSeqs(t, "retained", e.retained("a"), []uint64{1, 2})
}
