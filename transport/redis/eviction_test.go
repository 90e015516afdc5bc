package redis

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// TestEvictedHistoryRecounted (issue 19, item 6): a topic's list evicted
// by Redis (maxmemory with allkeys-lru) used to stay counted in the meta
// key's bytes and events for good, so that the hub's capacity shrank. The
// figures are corrected: the node's housekeeping notices the missing list
// and recounts what the lists hold, events of several topics included.
func TestEvictedHistoryRecounted(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	c := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
	defer c.Close()
	ctx := context.Background()
	a := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 1000, MaxBytes: 1 << 30})
	a.publishN(t, 10, "t1")
	only1 := a.Stats().Bytes
	a.publishN(t, 10, "t2")
	for range 5 {
		a.publish(t, "both", "t1", "t2")
	}
	st := a.Stats()
	if st.Events != 25 {
		t.Fatalf("stats before: %+v", st)
	}
	total := st.Bytes
	if err := c.Del(ctx, "{"+prefix+":h}:"+st.Epoch+":t:t1").Err(); err != nil {
		t.Fatal(err)
	}
	// t2 holds its ten events and the five of both topics
	eventually(t, "the figures corrected", func() bool {
		st := a.Stats()
		return st.Events == 15 && st.Bytes == total-only1 && st.Topics == 1
	})
	// the events of both topics are counted out once t2 lets them go
	a.SetLimits(transport.Limits{Events: 1, MaxBytes: 1 << 30})
	if st := a.Stats(); st.Events != 1 {
		t.Fatalf("after keeping one event a topic: %+v", st)
	}
}

// TestMissingLastKeepsResumptionsHonest (issue 19, item 6): with the last
// zset evicted, the topics' newest seqs are unknown: a resumption from an
// old id must get a reset rather than claim a history it cannot vouch for.
func TestMissingLastKeepsResumptionsHonest(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	c := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
	defer c.Close()
	ctx := context.Background()
	// no retained history for "gone": only last knows its newest event
	a := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 1000, MaxBytes: 1 << 30})
	first := a.publish(t, "x", "gone")
	a.publish(t, "y", "gone")
	st := a.Stats()
	if err := c.Del(ctx, "{"+prefix+":h}:"+st.Epoch+":t:gone", "{"+prefix+":h}:"+st.Epoch+":last").Err(); err != nil {
		t.Fatal(err)
	}
	a.publish(t, "z", "other")
	r := a.replay(t, transport.ReplayQuery{Topics: []string{"gone"}, Resume: true, LastEventID: first.ID})
	if !r.Reset {
		t.Fatalf("a resumption over evicted events was not reset: %+v", r)
	}
}
