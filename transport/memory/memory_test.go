package memory

import (
	"context"
	"fmt"
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
