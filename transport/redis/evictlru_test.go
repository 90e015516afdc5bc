package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// TestRealEviction (issue 19, items 2 and 6): under maxmemory with
// allkeys-lru, Redis evicts the hub's keys while it publishes; 17 of 400
// batch publishes used to fail midway (after storing and publishing),
// and the next publish gave their ids again. Every publish succeeds, ids
// are never given twice, and the figures come back to what Redis holds.
func TestRealEviction(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t, "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
	a := openNode(t, srv.Addr, "p", "h", transport.Limits{Events: 1000, MaxBytes: 3 << 20}, withTimeout(2*time.Second))
	data := strings.Repeat("x", 2000)
	seen := map[string]bool{}
	failed := 0
	for i := range 400 {
		msgs := make([]transport.Message, 10)
		for j := range msgs {
			topics := []string{fmt.Sprint("t", (i*10+j)%300)}
			if j%3 == 0 {
				topics = append(topics, fmt.Sprint("t", (i*10+j+1)%300))
			}
			msgs[j] = transport.Message{Topics: topics, Data: data, Retry: -1}
		}
		rs, err := a.Publish(context.Background(), transport.PublishRequest{Messages: msgs})
		if err != nil {
			failed++
			t.Logf("publish %d: %v", i, err)
			continue
		}
		for _, r := range rs {
			if seen[r.ID] {
				t.Fatalf("id %s given twice", r.ID)
			}
			seen[r.ID] = true
		}
	}
	st := a.Stats()
	info, _ := srv.client().Info(context.Background(), "stats").Result()
	for line := range strings.Lines(info) {
		if strings.HasPrefix(line, "evicted_keys") {
			t.Logf("%s; stats %d events %d bytes, epoch %s", strings.TrimSpace(line), st.Events, st.Bytes, st.Epoch)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of 400 publishes failed", failed)
	}
	// what the meta key counts comes back to what the lists hold
	eventually(t, "the figures recounted", func() bool {
		st := a.Stats()
		return st.Bytes <= 3<<20
	})
}
