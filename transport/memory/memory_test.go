package memory

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/transporttest"
)

func publish(t *testing.T, tr *Transport, topics ...string) {
	t.Helper()
	_, err := tr.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{{Topics: topics, Data: "x", Retry: -1}}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestIdleTopicsAreForgottenAndTheirMemoryFreed(t *testing.T) {
	tr := open(t, newClock().Now, transport.Limits{Events: 1, MaxBytes: 1 << 30}, transporttest.NewRecorder(t))
	for i := range 3 * maxIdleTopics {
		publish(t, tr, fmt.Sprint("t", i))
		publish(t, tr, fmt.Sprint("t", i)) // evicts the first
	}
	tr.SetLimits(transport.Limits{Events: 0, MaxBytes: 1 << 30})
	tr.housekeep()
	tr.mu.Lock()
	n, logLen, capacity := len(tr.topics), len(tr.log)-tr.logHead, cap(tr.log)
	tr.mu.Unlock()
	if n != 0 || logLen >= 64 || capacity > 4096 {
		t.Fatalf("%d topic records and %d log entries (capacity %d) left", n, logLen, capacity)
	}
	// a forgotten topic errs on the side of a reset
	r, err := tr.Replay(context.Background(), transport.ReplayQuery{Topics: []string{"t5"}, Resume: true, LastEventID: transport.FormatID(tr.epoch, 1)})
	if err != nil || !r.Reset {
		t.Fatalf("resume on a forgotten topic: reset %v, %v; want a reset", r.Reset, err)
	}
}

// discard is a sink that keeps nothing, so that a test's heap holds only
// what the transport keeps.
type discard struct{}

func (discard) Deliver(*transport.Event) int        { return 0 }
func (discard) Interrupt([]string, string)          {}
func (discard) Evicted(*transport.Event)            {}
func (discard) Disconnect(transport.Disconnect) int { return 0 }

// heapInUse returns the bytes of live objects, after collecting the rest.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestIdempotencyRecordsCostWhatTheyCount reproduces, at a smaller scale,
// the red-team figures of issue 18 (a keyed stream of 2,000,000 events
// took 219 MB, 2,000 keyed arrays of 1,000 events 211 MB): a key's record
// keeps runs of ids, not a receipt per event, and what Stats counts for
// the records is what they take from the heap.
func TestIdempotencyRecordsCostWhatTheyCount(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	lim := transport.Limits{Events: 10, MaxBytes: 1 << 30}
	batch := make([]transport.Message, 1000)
	for i := range batch {
		batch[i] = transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}
	}
	const fp = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

	// one key over 200,000 events in 1,000-event batches
	tr := open(t, nil, lim, discard{})
	publish(t, tr, "t")
	before := heapInUse()
	for off := 0; off < 200_000; off += len(batch) {
		if _, err := tr.Publish(context.Background(), transport.PublishRequest{Messages: batch, Key: "stream", Fingerprint: fp, Offset: off}); err != nil {
			t.Fatal(err)
		}
	}
	grown := heapInUse() - before
	st := tr.Stats().Idempotency
	t.Logf("one key over 200,000 events: heap %+d bytes, counted %d", grown, st.Bytes)
	if st.Keys != 1 || st.Bytes > 1024 || grown > 64<<10 {
		t.Errorf("one key over 200,000 events: heap %+d bytes, Stats().Idempotency %+v; want a few hundred bytes (the history and the map take a few KB too)", grown, st)
	}

	// 500 keys on arrays of 1,000 events, with a subscriber count that
	// changes every 100 events
	tr = open(t, nil, lim, &counting{})
	publish(t, tr, "t")
	before = heapInUse()
	const keys = 500
	for i := range keys {
		if _, err := tr.Publish(context.Background(), transport.PublishRequest{Messages: batch, Key: fmt.Sprintf("550e8400-e29b-41d4-a716-%012d", i), Fingerprint: fp}); err != nil {
			t.Fatal(err)
		}
	}
	grown = heapInUse() - before
	st = tr.Stats().Idempotency
	t.Logf("%d keys on 1,000-event arrays: heap %+d bytes (%d a key), counted %d (%d a key)", keys, grown, grown/keys, st.Bytes, st.Bytes/keys)
	if st.Keys != keys || grown > 2*st.Bytes || grown < st.Bytes/2 || st.Bytes/keys > 1024 {
		t.Errorf("%d keys: heap %+d bytes, Stats().Idempotency %+v; want under 1 KiB a key, counted as it costs", keys, grown, st)
	}

	// a budget bounds them
	tr.SetLimits(transport.Limits{Events: 10, MaxBytes: 1 << 30, IdempotencyMaxBytes: st.Bytes / 4})
	if got := tr.Stats().Idempotency; got.Bytes > st.Bytes/4 || got.Keys < keys/4-10 {
		t.Errorf("budget of %d bytes: Stats().Idempotency %+v", st.Bytes/4, got)
	}
}

// counting is a sink whose subscriber count changes every 100 events.
type counting struct{ n int }

func (c *counting) Deliver(*transport.Event) int      { c.n++; return c.n / 100 % 7 }
func (*counting) Interrupt([]string, string)          {}
func (*counting) Evicted(*transport.Event)            {}
func (*counting) Disconnect(transport.Disconnect) int { return 0 }
