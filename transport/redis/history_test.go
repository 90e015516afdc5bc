package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

func TestPublishAndReplay(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	n := openNode(t, sharedRedis, prefix, "h", defaultLimits)

	r0 := n.replay(t, transport.ReplayQuery{Topics: []string{"a"}})
	if r0.Head != 0 || r0.Events != nil || r0.Reset {
		t.Fatalf("empty hub: %+v", r0)
	}
	var ids []string
	for i := range 3 {
		ids = append(ids, n.publish(t, fmt.Sprintf("a%d", i), "a").ID)
	}
	b := n.publish(t, "b0", "b")
	ab := n.publish(t, "ab", "a", "b")
	if got := seqOf(t, ab.ID); got != 5 {
		t.Fatalf("seq of the fifth event: %d", got)
	}
	if ab.Topics[0] != "a" || ab.Topics[1] != "b" || ab.Repeated {
		t.Fatalf("receipt %+v", ab)
	}

	// resume from the start of the epoch: every event of a and b, in order, once
	r := n.replay(t, transport.ReplayQuery{Topics: []string{"a", "b"}, Resume: true, LastEventID: r0.HeadID})
	if r.Reset || r.Head != 5 || !slices.Equal(eventSeqs(r.Events), []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("resume from 0: reset %v head %d seqs %v", r.Reset, r.Head, eventSeqs(r.Events))
	}
	if r.HeadID != ab.ID {
		t.Fatalf("head id %q, want %q", r.HeadID, ab.ID)
	}
	want := "id: " + ids[1] + "\ndata: a1\n\n"
	if string(r.Events[1].Wire) != want || r.Events[1].ID != ids[1] {
		t.Fatalf("wire %q, want %q", r.Events[1].Wire, want)
	}
	if !slices.Equal(r.Events[4].Topics, []string{"a", "b"}) {
		t.Fatalf("topics %v", r.Events[4].Topics)
	}
	if d := time.Since(r.Events[0].Time); d < 0 || d > time.Minute {
		t.Fatalf("event time %v", r.Events[0].Time)
	}

	// resume from the middle
	r = n.replay(t, transport.ReplayQuery{Topics: []string{"b"}, Resume: true, LastEventID: b.ID})
	if r.Reset || !slices.Equal(eventSeqs(r.Events), []uint64{5}) {
		t.Fatalf("resume b from 4: reset %v seqs %v", r.Reset, eventSeqs(r.Events))
	}
	// latest
	r = n.replay(t, transport.ReplayQuery{Topics: []string{"a", "b"}, Latest: 2})
	if r.Reset || !slices.Equal(eventSeqs(r.Events), []uint64{4, 5}) {
		t.Fatalf("latest 2: %v", eventSeqs(r.Events))
	}
	// ids that cannot be resumed: other epoch, malformed, in the future
	for _, id := range []string{"ffffffff-1", "garbage", strings.Split(ab.ID, "-")[0] + "-99"} {
		r = n.replay(t, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: id, ResetLatest: 2})
		if !r.Reset || !slices.Equal(eventSeqs(r.Events), []uint64{3, 5}) {
			t.Fatalf("resume from %q: reset %v seqs %v", id, r.Reset, eventSeqs(r.Events))
		}
	}
	st := n.Stats()
	if st.Head != 5 || st.Events != 5 || st.Topics != 2 || !st.State.Up || st.Epoch == "" {
		t.Fatalf("stats %+v", st)
	}
}

// retained reads every retained event of topics, in Seq order, through a
// replay of each topic: a replay of several starts after the newest event
// any of them lost.
func retained(t *testing.T, n *node, topics ...string) []*transport.Event {
	var evs []*transport.Event
	for _, topic := range topics {
		evs = append(evs, n.replay(t, transport.ReplayQuery{Topics: []string{topic}, Latest: 1 << 30}).Events...)
	}
	slices.SortFunc(evs, func(a, b *transport.Event) int { return cmpSeq(a.Seq, b.Seq) })
	return slices.CompactFunc(evs, func(a, b *transport.Event) bool { return a.Seq == b.Seq })
}

func sizeOf(evs []*transport.Event) int64 {
	var n int64
	for _, ev := range evs {
		n += ev.Size()
	}
	return n
}

func TestHistoryLimits(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)

	t.Run("events per topic", func(t *testing.T) {
		prefix := uniquePrefix(t, sharedRedis)
		n := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 3, MaxBytes: 1 << 30})
		var last transport.Receipt
		for i := range 5 {
			n.publish(t, "x", "a")
			last = n.publish(t, fmt.Sprint(i), "a", "b")
		}
		evs := retained(t, n, "a")
		if !slices.Equal(eventSeqs(evs), []uint64{8, 9, 10}) {
			t.Fatalf("a keeps %v", eventSeqs(evs))
		}
		evsB := retained(t, n, "b")
		if !slices.Equal(eventSeqs(evsB), []uint64{6, 8, 10}) {
			t.Fatalf("b keeps %v", eventSeqs(evsB))
		}
		all := retained(t, n, "a", "b")
		st := n.Stats()
		if st.Events != len(all) || st.Bytes != sizeOf(all) {
			t.Fatalf("stats count %d events %d bytes; retained %d events %d bytes", st.Events, st.Bytes, len(all), sizeOf(all))
		}
		// resuming before an evicted event of a is a reset; of b not
		r := n.replay(t, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: strings.Split(last.ID, "-")[0] + "-6"})
		if !r.Reset {
			t.Fatal("a resumed from 6 though 7 was evicted")
		}
		r = n.replay(t, transport.ReplayQuery{Topics: []string{"b"}, Resume: true, LastEventID: strings.Split(last.ID, "-")[0] + "-6"})
		if r.Reset || !slices.Equal(eventSeqs(r.Events), []uint64{8, 10}) {
			t.Fatalf("b from 6: reset %v %v", r.Reset, eventSeqs(r.Events))
		}
		// shrinking trims at once
		n.SetLimits(transport.Limits{Events: 1, MaxBytes: 1 << 30})
		if got := eventSeqs(retained(t, n, "a", "b")); !slices.Equal(got, []uint64{10}) {
			t.Fatalf("after shrinking to 1: %v", got)
		}
		all = retained(t, n, "a", "b")
		if st := n.Stats(); st.Events != 1 || st.Bytes != sizeOf(all) {
			t.Fatalf("after shrinking: %+v", st)
		}
	})

	t.Run("bytes per hub, oldest first", func(t *testing.T) {
		prefix := uniquePrefix(t, sharedRedis)
		n := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 1000, MaxBytes: 1 << 30})
		n.publish(t, strings.Repeat("x", 100), "a")
		one := sizeOf(retained(t, n, "a"))
		max := 3*one + one/2
		n.SetLimits(transport.Limits{Events: 1000, MaxBytes: max})
		for i := range 9 {
			n.publish(t, strings.Repeat("x", 100), []string{"a", "b", "c"}[i%3])
		}
		all := retained(t, n, "a", "b", "c")
		if !slices.Equal(eventSeqs(all), []uint64{8, 9, 10}) {
			t.Fatalf("kept %v", eventSeqs(all))
		}
		st := n.Stats()
		if st.Bytes != sizeOf(all) || st.Bytes > max || st.Events != 3 {
			t.Fatalf("stats %d bytes %d events; retained %d bytes; max %d", st.Bytes, st.Events, sizeOf(all), max)
		}
		// an event to several topics counts once, and leaves all of them together
		n.publish(t, strings.Repeat("y", 100), "a", "b", "c")
		all = retained(t, n, "a", "b", "c")
		if st := n.Stats(); st.Bytes != sizeOf(all) || st.Bytes > max {
			t.Fatalf("with a three-topic event: stats %d, retained %d (%v), max %d", st.Bytes, sizeOf(all), eventSeqs(all), max)
		}
	})

	t.Run("age", func(t *testing.T) {
		prefix := uniquePrefix(t, sharedRedis)
		ttl := 300 * time.Millisecond
		n := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 1000, MaxBytes: 1 << 30, TTL: ttl})
		first := n.publish(t, "old", "a")
		time.Sleep(ttl) // the behaviour under test is time passing
		n.publish(t, "new", "a")
		if got := eventSeqs(retained(t, n, "a")); !slices.Equal(got, []uint64{2}) {
			t.Fatalf("after the ttl: %v", got)
		}
		r := n.replay(t, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: strings.Split(first.ID, "-")[0] + "-0"})
		if !r.Reset {
			t.Fatal("resumed across an expired event")
		}
		// the janitor expires the rest without a publish
		eventually(t, "the janitor expired the last event", func() bool { return n.Stats().Events == 0 })
		if st := n.Stats(); st.Bytes != 0 || st.Topics != 0 {
			t.Fatalf("after expiry: %+v", st)
		}
	})

	t.Run("no history", func(t *testing.T) {
		prefix := uniquePrefix(t, sharedRedis)
		n := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 0, MaxBytes: 1 << 30})
		first := n.publish(t, "x", "a")
		n.publish(t, "y", "a")
		if st := n.Stats(); st.Events != 0 || st.Bytes != 0 || st.Head != 2 {
			t.Fatalf("stats %+v", st)
		}
		r := n.replay(t, transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: first.ID})
		if !r.Reset {
			t.Fatal("resumed though nothing is kept")
		}
	})
}

func TestIdleTopicsForgotten(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	n := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 1, MaxBytes: 1 << 30})
	n.client.HSet(context.Background(), n.base+":meta", "max_idle", 80)
	var ids []string
	for i := range 100 {
		ids = append(ids, n.publish(t, "x", fmt.Sprint("t", i)).ID)
		n.publish(t, "y", fmt.Sprint("t", i)) // evicts x: the topic keeps y
	}
	// make every topic idle: their events go by bytes
	n.SetLimits(transport.Limits{Events: 1, MaxBytes: 1})
	n.publish(t, "z", "other") // the publish forgets the oldest idle topics
	cnt, err := n.client.ZCard(context.Background(), n.base+":"+n.Stats().Epoch+":last").Result()
	if err != nil || cnt > 80 {
		t.Fatalf("%d topics remembered (%v), want at most 80", cnt, err)
	}
	// a client that saw x of t0 missed y: forgotten or not, it gets a reset
	for _, i := range []int{0, 99} {
		r := n.replay(t, transport.ReplayQuery{Topics: []string{fmt.Sprint("t", i)}, Resume: true, LastEventID: ids[i]})
		if !r.Reset {
			t.Fatalf("t%d resumed from its first event, though the second was evicted", i)
		}
	}
	// a topic never published to resumes fine from the head
	head := n.replay(t, transport.ReplayQuery{Topics: []string{"never"}}).HeadID
	if r := n.replay(t, transport.ReplayQuery{Topics: []string{"never"}, Resume: true, LastEventID: head}); r.Reset {
		t.Fatal("a new topic resumed from the head is a reset")
	}
}

func TestIdempotencyAcrossNodes(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	b := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	msgs := []transport.Message{{Topics: []string{"t"}, Data: "1", Retry: -1}, {Topics: []string{"t"}, Data: "2", Retry: -1}}
	req := transport.PublishRequest{Messages: msgs, Key: "k1", Fingerprint: "fp"}
	first, err := a.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if first[i].Repeated || !again[i].Repeated || again[i].ID != first[i].ID {
			t.Fatalf("receipt %d: first %+v, again %+v", i, first[i], again[i])
		}
	}
	if st := b.Stats(); st.Head != 2 {
		t.Fatalf("published %d events, want 2", st.Head)
	}
	// a streaming publish that goes on: position 2 is new, 1 repeated
	more, err := b.Publish(context.Background(), transport.PublishRequest{Messages: msgs, Key: "k1", Fingerprint: "fp", Offset: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !more[0].Repeated || more[0].ID != first[1].ID || more[1].Repeated || seqOf(t, more[1].ID) != 3 {
		t.Fatalf("continued: %+v", more)
	}
	_, err = b.Publish(context.Background(), transport.PublishRequest{Messages: msgs, Key: "k1", Fingerprint: "other"})
	if !errors.Is(err, transport.ErrKeyMismatch) {
		t.Fatalf("other fingerprint: %v", err)
	}
	// the scripts forget the record after a day, and count it until then;
	// Redis expires it a day later, should no node run the hub any more
	if ttl, err := a.client.PTTL(context.Background(), a.base+":i:k1").Result(); err != nil || ttl <= 24*time.Hour || ttl > 48*time.Hour {
		t.Fatalf("record ttl %v (%v), want between one and two days", ttl, err)
	}
	if st := a.Stats().Idempotency; st.Keys != 1 || st.Bytes <= 0 {
		t.Fatalf("Stats().Idempotency %+v, want 1 key", st)
	}
	if st := a.Stats(); st.Head != 3 {
		t.Fatalf("head %d, want 3", st.Head)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tr   *Transport
		want string
	}{
		{&Transport{URL: "redis://x:1", Addresses: []string{"y:1"}}, "exclusive"},
		{&Transport{URL: "http://x"}, "url"},
		{&Transport{Addresses: []string{"nohostport"}}, "address"},
		{&Transport{Addresses: []string{"a:1", "b:1"}, DB: 2}, "Cluster"},
		{&Transport{Prefix: "a{b}"}, "prefix"},
		{&Transport{Timeout: -1}, "timeout"},
		{&Transport{TLS: &TLSConfig{CA: "/nonexistent"}}, "tls ca"},
	} {
		_, err := tc.tr.options()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one about %s", tc.tr, err, tc.want)
		}
	}
}
