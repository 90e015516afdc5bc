package redis

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// TestMemoryPerEvent measures what Redis spends on a retained event,
// against what history_max_bytes counts of it (Stats.Bytes): one topic
// per event over many topics, and ten topics per event. It only reports
// (SSE_MEASURE_MEMORY=1); see BENCHMARKS.md.
func TestMemoryPerEvent(t *testing.T) {
	t.Parallel()
	if os.Getenv("SSE_MEASURE_MEMORY") == "" {
		t.Skip("set SSE_MEASURE_MEMORY=1 to measure")
	}
	for _, c := range []struct {
		name           string
		events, topics int // topics per event
		spread         int // distinct topics
		data           int
	}{
		{"1topic-each-50000topics-64B", 50000, 1, 50000, 64},
		{"1topic-each-10topics-1KiB", 20000, 1, 10, 1024},
		{"10topics-each-1000topics-1KiB", 5000, 10, 1000, 1024},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := startPrivateRedis(t)
			n := openNode(t, srv.Addr, "p", "h", transport.Limits{Events: 1000, MaxBytes: 1 << 40})
			before := usedMemory(t, srv.client())
			data := strings.Repeat("x", c.data)
			const batch = 100
			var msgs []transport.Message
			for i := range c.events {
				topics := make([]string, c.topics)
				for j := range topics {
					topics[j] = fmt.Sprint("topic-", (i*c.topics+j)%c.spread)
				}
				msgs = append(msgs, transport.Message{Topics: topics, Data: data, Retry: -1})
				if len(msgs) == batch {
					if _, err := n.Publish(context.Background(), transport.PublishRequest{Messages: msgs}); err != nil {
						t.Fatal(err)
					}
					msgs = nil
				}
			}
			after := usedMemory(t, srv.client())
			st := n.Stats()
			grown := after - before
			t.Logf("%s: %d events, counted %d bytes (%.0f/event), redis grew %d bytes (%.0f/event): ratio %.2f",
				c.name, st.Events, st.Bytes, float64(st.Bytes)/float64(st.Events), grown,
				float64(grown)/float64(st.Events), float64(grown)/float64(st.Bytes))
		})
	}
}

// TestEventOfManyTopicsStoredOnce (issue 19, item 4): three 1 MiB events
// to 40 topics each grew Redis by 120 MiB and overflowed the Pub/Sub
// output buffer: the body was stored and published once per topic. It is
// stored once per event, and published once for the hub.
func TestEventOfManyTopicsStoredOnce(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	n := openNode(t, srv.Addr, "p", "h", transport.Limits{Events: 1000, MaxBytes: 64 << 20})
	topics := make([]string, 40)
	for i := range topics {
		topics[i] = fmt.Sprint("topic-", i)
	}
	n.watch(t, topics...)
	if err := srv.client().ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	before := usedMemory(t, srv.client())
	data := strings.Repeat("x", 1<<20)
	for range 3 {
		n.publish(t, data, topics...)
	}
	n.sink.awaitSeq(t, 3)
	grown := usedMemory(t, srv.client()) - before
	st := n.Stats()
	t.Logf("3 events of 1 MiB to 40 topics: redis grew %d bytes, %d counted", grown, st.Bytes)
	if grown > 2*st.Bytes {
		t.Fatalf("redis grew %d bytes for %d bytes of events counted", grown, st.Bytes)
	}
	// published once each, not once per topic
	if calls, _ := redisUsec(t, srv, "spublish"); calls != 3 {
		t.Fatalf("3 events of 40 topics published %v times", calls)
	}
	// and they replay whole from any of their topics
	r := n.replay(t, transport.ReplayQuery{Topics: topics[7:9], Latest: 10})
	if len(r.Events) != 3 || !strings.Contains(string(r.Events[2].Wire), data) {
		t.Fatalf("replay: %d events", len(r.Events))
	}
}
