package redis

import (
	"context"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// TestRollbackSeenOnlyByPublisher (issue 19, item 1): two nodes share a
// Redis; A has a subscriber, B only publishes. B publishes 5 events, Redis
// saves a snapshot, A publishes 5 more (delivered); Redis restarts from
// the snapshot, and B publishes before A notices. B's own newest seq is
// not above Redis's, yet the ids of A's events must not be given again:
// a new epoch starts, and A's subscribers are interrupted (a reset).
func TestRollbackSeenOnlyByPublisher(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout), slowReconnect)
	b := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	a.watch(t, "t")
	b.publishN(t, 5, "t")
	if err := srv.client().Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	a.publishN(t, 5, "t")
	a.sink.awaitSeq(t, 10)
	a.sink.mu.Lock()
	old := a.sink.events[len(a.sink.events)-1]
	a.sink.mu.Unlock()
	oldEpoch, _, _ := transport.ParseID(old.ID)
	srv.kill()
	srv.start() // from the snapshot: seq 5
	var ids []string
	for range 6 {
		rs, err := b.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"t"}, Data: "b", Retry: -1}}})
		if err != nil {
			t.Fatalf("publish after the restart: %v", err)
		}
		ids = append(ids, rs[0].ID)
	}
	for _, id := range ids {
		if e, seq, _ := transport.ParseID(id); e == oldEpoch && seq > 5 {
			t.Fatalf("B gave id %s again (ids %v)", id, ids)
		}
	}
	a.sink.await(t, "the epoch interruption", func(_ []*transport.Event, ints []interruption) bool {
		return len(ints) > 0 && ints[len(ints)-1].reason == "epoch" && ints[len(ints)-1].topics == nil
	})
}
