package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// usedMemory returns Redis's used_memory.
func usedMemory(t testing.TB, c *goredis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// keyedBatch returns n one-topic messages.
func keyedBatch(n int) []transport.Message {
	out := make([]transport.Message, n)
	for i := range out {
		out[i] = transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}
	}
	return out
}

const testFingerprint = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestIdempotencyRecordsStayWithinTheirBudget reproduces, with a smaller
// budget, the red-team figures of issue 18 (20,000 keys took 7.4 MB of
// Redis, without bound; a keyed stream of 500,000 events left a list of
// 500,001 entries): the keys' records take from Redis's memory what they
// count, within the budget, and a long keyed stream keeps runs of ids.
func TestIdempotencyRecordsStayWithinTheirBudget(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	c := srv.client()
	const budget = 1 << 20
	n := openNode(t, srv.Addr, "p", "h", transport.Limits{Events: 10, MaxBytes: 64 << 20, IdempotencyMaxBytes: budget})
	n.publish(t, "x", "t")
	n.Stats()
	if err := n.trim(context.Background(), true); err != nil { // every script loaded
		t.Fatal(err)
	}
	before := usedMemory(t, c)

	// 6,000 keys of one event each, from 8 publishers at once (the
	// red-team run had 20,000): more than the budget holds
	const keys, workers = 6_000, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < keys; i += workers {
				_, err := n.Publish(context.Background(), transport.PublishRequest{
					Messages: keyedBatch(1), Key: fmt.Sprintf("550e8400-e29b-41d4-a716-%012d", i), Fingerprint: testFingerprint})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	grown := usedMemory(t, c) - before
	st := n.Stats().Idempotency
	t.Logf("%d keys, budget %d: used_memory %+d bytes, Stats().Idempotency %+v (%d bytes a key)", keys, budget, grown, st, st.Bytes/int64(st.Keys))
	if st.Bytes > budget || st.Keys < budget/400 || st.Keys >= keys {
		t.Errorf("Stats().Idempotency %+v, want the newest keys within %d bytes", st, budget)
	}
	if grown > budget+budget/8 || grown < st.Bytes*3/4 {
		t.Errorf("used_memory grew by %d bytes for %d bytes of records counted, within a budget of %d", grown, st.Bytes, budget)
	}
	if l, _ := c.LLen(context.Background(), "{p:h}:iq").Result(); l != int64(st.Keys) {
		t.Errorf("the list of keys has %d entries for %d keys", l, st.Keys)
	}
	if got, _ := c.DBSize(context.Background()).Result(); got > int64(st.Keys)+20 {
		t.Errorf("%d keys in Redis for %d idempotency keys", got, st.Keys)
	}

	// a keyed stream of 100,000 events, with another publisher between
	// its batches now and then
	for off := 0; off < 100_000; off += 1000 {
		if off%25_000 == 0 {
			n.publish(t, "x", "t")
		}
		if _, err := n.Publish(context.Background(), transport.PublishRequest{
			Messages: keyedBatch(1000), Key: "stream", Fingerprint: testFingerprint, Offset: off}); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := c.Get(context.Background(), "{p:h}:i:stream").Result()
	if err != nil {
		t.Fatal(err)
	}
	size, _ := c.MemoryUsage(context.Background(), "{p:h}:i:stream").Result()
	t.Logf("a keyed stream of 100,000 events: record of %d bytes (MEMORY USAGE %d): %q", len(rec), size, rec[:strings.LastIndexByte(rec, '\n')])
	if len(rec) > 512 || strings.Count(rec, "+") != 4 {
		t.Errorf("the record of a keyed stream of 100,000 events in 4 runs: %q", rec)
	}
	iter := c.Scan(context.Background(), 0, "*", 1000).Iterator()
	for iter.Next(context.Background()) {
		k := iter.Val()
		if size, _ := c.MemoryUsage(context.Background(), k).Result(); size > 64<<10 && k != "{p:h}:iq" {
			t.Errorf("key %s takes %d bytes", k, size)
		}
	}
	if st := n.Stats().Idempotency; st.Bytes > budget {
		t.Errorf("after the stream: Stats().Idempotency %+v, over the budget", st)
	}
}

// age makes the idempotency key key of n's hub first used at ms in its
// record, and in its entry of the list of keys when entry is set.
func ageKey(t *testing.T, n *node, key string, ms int64, entry bool) {
	t.Helper()
	ctx := context.Background()
	c := n.client
	v, err := c.Get(ctx, n.base+":i:"+key).Result()
	if err != nil {
		t.Fatal(err)
	}
	first, rest, _ := strings.Cut(v, "\n")
	tm, positions, _ := strings.Cut(first, " ")
	c.Set(ctx, n.base+":i:"+key, strconv.FormatInt(ms, 10)+" "+positions+"\n"+rest, 0)
	if entry {
		old := tm + " " + key
		list, _ := c.LRange(ctx, n.base+":iq", 0, -1).Result()
		for i, e := range list {
			if e == old {
				c.LSet(ctx, n.base+":iq", int64(i), strconv.FormatInt(ms, 10)+" "+key)
			}
		}
	}
}

// TestIdempotencyKeysAreForgottenAfterADay: a key whose record is a day
// old is forgotten, by the janitor or by the next publish that names it,
// and leaves the figures.
func TestIdempotencyKeysAreForgottenAfterADay(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	n := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	publish := func(key string) transport.Receipt {
		t.Helper()
		rs, err := n.Publish(context.Background(), transport.PublishRequest{Messages: keyedBatch(1), Key: key, Fingerprint: "f"})
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	for _, key := range []string{"k1", "k2", "k3"} {
		publish(key)
	}
	one := n.Stats().Idempotency.Bytes / 3
	dayAgo := time.Now().Add(-transport.IdempotencyTTL - time.Minute).UnixMilli()

	// the janitor forgets k1, a day old
	ageKey(t, n, "k1", dayAgo, true)
	if err := n.trim(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if st := n.Stats().Idempotency; st.Keys != 2 || st.Bytes != 2*one {
		t.Errorf("k1 a day old: Stats().Idempotency %+v, want 2 keys of %d bytes", st, one)
	}
	if rc := publish("k1"); rc.Repeated {
		t.Errorf("k1, forgotten, repeated: %+v", rc)
	}

	// k3 is a day old, behind k2, which is not: the publish that names k3
	// forgets it
	ageKey(t, n, "k3", dayAgo, true)
	if rc := publish("k3"); rc.Repeated {
		t.Errorf("k3, a day old, repeated: %+v", rc)
	}
	if rc := publish("k2"); !rc.Repeated {
		t.Errorf("k2, not a day old, published anew: %+v", rc)
	}
	if st := n.Stats().Idempotency; st.Keys != 3 || st.Bytes != 3*one {
		t.Errorf("Stats().Idempotency %+v, want 3 keys of %d bytes", st, one)
	}
	if l, _ := n.client.LLen(context.Background(), n.base+":iq").Result(); l != 3 {
		t.Errorf("the list of keys has %d entries, want 3", l)
	}
}
