package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

func TestLiveDelivery(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	b := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	a.sink.subs = 3
	a.watch(t, "x", "y")
	// Watch returns once Redis confirmed the subscription
	n, err := a.client.PubSubShardNumSub(context.Background(), a.channel("x")).Result()
	if err != nil || n[a.channel("x")] != 1 {
		t.Fatalf("subscribers of x's channel after Watch: %v (%v)", n, err)
	}

	// published on the other node; each node's receipt counts its own subscribers
	rb := b.publish(t, "one", "x", "y")
	if rb.Subscribers != 0 {
		t.Fatalf("node b has no subscriber, its receipt says %d", rb.Subscribers)
	}
	ra := a.publish(t, "two", "y")
	if ra.Subscribers != 3 {
		t.Fatalf("node a's receipt counts %d subscribers, want what its hub queued (3)", ra.Subscribers)
	}
	a.publish(t, "not watched", "z")
	b.publish(t, "three", "x")
	a.sink.await(t, "three events", func(evs []*transport.Event, _ []interruption) bool { return len(evs) >= 3 })
	got := a.sink.seqs()
	if !slices.Equal(got, []uint64{1, 2, 4}) {
		t.Fatalf("node a got %v, want [1 2 4]: an event to two watched topics once, z not at all", got)
	}
	a.sink.mu.Lock()
	ev := a.sink.events[0]
	a.sink.mu.Unlock()
	if string(ev.Wire) != "id: "+rb.ID+"\ndata: one\n\n" || !slices.Equal(ev.Topics, []string{"x", "y"}) {
		t.Fatalf("delivered %q to %v", ev.Wire, ev.Topics)
	}
	if st := a.Stats(); st.State.WatchedTopics != 2 || !st.State.Up {
		t.Fatalf("state %+v", st.State)
	}

	// unwatched topics stay subscribed a while, then go
	a.Unwatch([]string{"x", "y"})
	if st := a.Stats(); st.State.WatchedTopics != 0 || st.State.Detail["lingering_topics"] != 2 {
		t.Fatalf("after unwatch: %+v", st.State)
	}
	a.rd.unsubscribeIdle(context.Background(), 0)
	eventually(t, "x's channel unsubscribed", func() bool {
		n, err := a.client.PubSubShardNumSub(context.Background(), a.channel("x")).Result()
		return err == nil && n[a.channel("x")] == 0
	})
	b.publish(t, "unheard", "x")
	a.watch(t, "x")
	last := b.publish(t, "heard", "x")
	a.sink.await(t, "the event after watching again", func(evs []*transport.Event, _ []interruption) bool {
		return evs[len(evs)-1].ID == last.ID
	})
	if got := a.sink.seqs(); !slices.Equal(got, []uint64{1, 2, 4, 6}) {
		t.Fatalf("got %v", got)
	}
	if len(a.sink.interrupts) != 0 {
		t.Fatalf("interrupts: %v", a.sink.interrupts)
	}
}

// TestTwoNodesConcurrentPublishers: with publishers on both nodes at once,
// each node's sink gets exactly what Redis holds for its topics, once, in
// order.
func TestTwoNodesConcurrentPublishers(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	limits := transport.Limits{Events: 10000, MaxBytes: 1 << 30}
	a := openNode(t, sharedRedis, prefix, "h", limits)
	b := openNode(t, sharedRedis, prefix, "h", limits)
	topics := []string{"t0", "t1", "t2", "t3", "t4"}
	a.watch(t, "t0", "t1", "t2")
	b.watch(t, "t2", "t3")
	start := a.replay(t, transport.ReplayQuery{Topics: topics}).HeadID

	const perPublisher = 300
	var wg sync.WaitGroup
	for p := range 4 {
		n := []*node{a, b}[p%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for i := range perPublisher {
				ts := []string{topics[rng.IntN(len(topics))]}
				if i%7 == 0 {
					ts = append(ts, topics[(slices.Index(topics, ts[0])+1)%len(topics)])
				}
				if _, err := n.Publish(context.Background(), transport.PublishRequest{
					Messages: []transport.Message{{Topics: ts, Data: fmt.Sprint(p, "/", i), Retry: -1}},
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range []struct {
		n      *node
		topics []string
	}{{a, []string{"t0", "t1", "t2"}}, {b, []string{"t2", "t3"}}} {
		want := a.replay(t, transport.ReplayQuery{Topics: c.topics, Resume: true, LastEventID: start})
		if want.Reset || len(want.Events) == 0 {
			t.Fatalf("history of %v: reset %v, %d events", c.topics, want.Reset, len(want.Events))
		}
		last := want.Events[len(want.Events)-1].Seq
		c.n.sink.await(t, fmt.Sprint("every event of ", c.topics), func(evs []*transport.Event, _ []interruption) bool {
			return len(evs) > 0 && evs[len(evs)-1].Seq >= last
		})
		if got := c.n.sink.seqs(); !slices.Equal(got, eventSeqs(want.Events)) {
			t.Fatalf("%v: delivered %d events, redis holds %d; first difference at %d", c.topics, len(got), len(want.Events), firstDiff(got, eventSeqs(want.Events)))
		}
		if len(c.n.sink.interrupts) != 0 {
			t.Fatalf("interrupts: %v", c.n.sink.interrupts)
		}
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestReplaySeam: a subscriber that watches, then replays, while events
// are published, gets every event of its topic once: the replay up to
// its head, then live events above it.
func TestReplaySeam(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	limits := transport.Limits{Events: 10000, MaxBytes: 1 << 30}
	pub := openNode(t, sharedRedis, prefix, "h", limits)
	sub := openNode(t, sharedRedis, prefix, "h", limits)
	start := pub.replay(t, transport.ReplayQuery{Topics: []string{"s"}}).HeadID
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			pub.publish(t, fmt.Sprint(i), "s")
		}
	}()
	defer func() { close(stop); <-done }()
	for round := range 5 {
		topic := []string{"s"}
		mark := len(sub.sink.seqs())
		sub.watch(t, topic...)
		rep := sub.replay(t, transport.ReplayQuery{Topics: topic, Resume: true, LastEventID: start})
		if rep.Reset {
			t.Fatal("reset")
		}
		// what this subscriber sees: the replay, then live events above the head
		var got []uint64
		got = append(got, eventSeqs(rep.Events)...)
		sub.sink.await(t, "live events past the head", func(evs []*transport.Event, _ []interruption) bool {
			return len(evs) > mark && evs[len(evs)-1].Seq > rep.Head+20
		})
		for _, s := range sub.sink.seqs()[mark:] {
			if s > rep.Head {
				got = append(got, s)
			}
		}
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				t.Fatalf("round %d: seam at head %d: %d then %d", round, rep.Head, got[i-1], got[i])
			}
		}
		sub.Unwatch(topic)
		sub.rd.unsubscribeIdle(context.Background(), 0)
	}
}

// TestGapInterrupts: a live message whose prev is not the last event
// delivered for its topic ends that topic's streams, and a message at or
// below the delivered seq is not delivered again.
func TestGapInterrupts(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	n := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	n.watch(t, "g", "other")
	r := n.publish(t, "one", "g")
	n.publish(t, "two", "unwatched")
	n.publish(t, "three", "unwatched") // so that Redis's seq is not below the forged one
	n.sink.await(t, "the first event", func(evs []*transport.Event, _ []interruption) bool { return len(evs) == 1 })
	epoch, _, _ := transport.ParseID(r.ID)
	ctx := context.Background()
	// a duplicate of event 1, then event 3 of g whose prev is 2: event 2 of g was missed
	n.client.SPublish(ctx, n.channel("g"), epoch+" 1 0 100 1\n0 g\ndata: dup\n\n")
	n.client.SPublish(ctx, n.channel("g"), epoch+" 3 0 100 2\n2 g\n0 other\ndata: three\n\n")
	n.sink.await(t, "the gap's interruption and event 3", func(evs []*transport.Event, ints []interruption) bool {
		return len(evs) == 2 && len(ints) == 1
	})
	n.sink.mu.Lock()
	defer n.sink.mu.Unlock()
	if ints := n.sink.interrupts; !slices.Equal(ints[0].topics, []string{"g"}) || ints[0].reason != "gap" {
		t.Fatalf("interrupts %v", ints)
	}
	if n.sink.events[1].Seq != 3 {
		t.Fatalf("delivered %d after the gap", n.sink.events[1].Seq)
	}
	if rs := n.rd.resyncs["gap"]; rs != 1 {
		t.Fatalf("gap count %d", rs)
	}
}

// TestGapInterruptsAfterJoining: a second transport of the hub on the
// node (a reload's) joins the topic's channel, whose subscription the
// first one's watch had confirmed already: no confirmation comes for it,
// and its order check runs all the same (mux.add).
func TestGapInterruptsAfterJoining(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	old := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	old.watch(t, "g")
	n := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	n.rd.mu.Lock()
	shared := n.rd.m == old.rd.m
	n.rd.mu.Unlock()
	if !shared {
		t.Fatal("the two transports do not share the node's Pub/Sub connection")
	}
	n.watch(t, "g")
	r := n.publish(t, "one", "g")
	n.publish(t, "two", "unwatched")
	n.publish(t, "three", "unwatched") // so that Redis's seq is not below the forged one
	n.sink.awaitSeq(t, seqOf(t, r.ID))
	epoch, _, _ := transport.ParseID(r.ID)
	// event 3 of g whose prev is 2: event 2 of g was missed
	n.client.SPublish(context.Background(), n.channel("g"), epoch+" 3 0 100 1\n2 g\ndata: three\n\n")
	n.sink.await(t, "the gap's interruption", func(_ []*transport.Event, ints []interruption) bool { return len(ints) > 0 })
	n.sink.mu.Lock()
	defer n.sink.mu.Unlock()
	if ints := n.sink.interrupts; len(ints) != 1 || !slices.Equal(ints[0].topics, []string{"g"}) || ints[0].reason != "gap" {
		t.Fatalf("interrupts %v", ints)
	}
}
