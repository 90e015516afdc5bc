package caddysse

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/memory"
)

// failingOutput is an output whose connection has been closed.
type failingOutput struct{}

func (failingOutput) write([][]byte) error    { return errors.New("use of closed network connection") }
func (failingOutput) flush() error            { return nil }
func (failingOutput) interrupt(time.Duration) {}

// idleSubscriber returns a subscriber whose writer waits for work.
func idleSubscriber(h *Hub, out output) *subscriber {
	s := newSubscriber(h, []string{"t"}, out)
	s.idle()
	return s
}

// testHub opens a hub on the memory transport.
func testHub(t testing.TB) *Hub {
	t.Helper()
	h, err := newHub("test", new(memory.Transport), transport.Limits{Events: 1000, MaxBytes: 64 << 20}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Destruct() })
	return h
}

// startedStream subscribes a stream to topic t of h, writing to out, as
// if its start had been written.
func startedStream(t testing.TB, h *Hub, out output) *stream {
	t.Helper()
	sub, rep, err := h.Subscribe(context.Background(), subscribeRequest{topics: []string{"t"}, out: out})
	if err != nil {
		t.Fatal(err)
	}
	sub.seam = rep.Head
	sub.pos.Store(rep.Head)
	sub.idle()
	return &stream{route: &Subscribe{}, out: out, sub: sub, ctx: context.Background()}
}

// TestLoopKeepsTheEndReason: a stream dropped as slow, whose pending write
// then fails (its connection closed under it), ends as slow, so that it
// is not counted a second time as a client disconnect.
func TestLoopKeepsTheEndReason(t *testing.T) {
	h := testHub(t)
	publish := func() {
		msgs := []transport.Message{{Topics: []string{"t"}, Data: "x", Retry: -1}}
		if _, err := h.Publish(context.Background(), transport.PublishRequest{Messages: msgs}); err != nil {
			t.Fatal(err)
		}
	}
	for _, reason := range []endReason{endSlow, endShutdown} {
		st := startedStream(t, h, failingOutput{})
		publish()
		st.sub.finish(reason)
		if got := st.loop(nil); got != reason {
			t.Errorf("ended as %s, want %s", got, reason)
		}
		h.Unsubscribe(st.sub, reason)
	}
	st := startedStream(t, h, failingOutput{})
	publish()
	if got := st.loop(nil); got != endClient {
		t.Errorf("a failed write ended the stream as %s, want client", got)
	}
}

// TestSlowWarningCountsEveryDrop: a hundred subscribers dropped as slow at
// once are one warning with a count of a hundred (the drops after the
// first are logged when the warning interval ends, not left for a next
// drop that may never come); a drop an interval later is a warning of
// its own.
func TestSlowWarningCountsEveryDrop(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.WarnLevel)
	h, err := newHub("test", new(memory.Transport), transport.Limits{Events: 1000, MaxBytes: 64 << 20}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Destruct() })
	drop := func(n int) {
		for range n {
			st := startedStream(t, h, failingOutput{})
			if st.sub.finish(endSlow) {
				h.dropSlow(st.sub)
			}
		}
	}
	counts := func() []int64 {
		var out []int64
		for _, e := range logs.FilterMessageSnippet("disconnected slow subscribers").All() {
			out = append(out, e.ContextMap()["count"].(int64))
		}
		return out
	}
	drop(100)
	deadline := time.Now().Add(5 * time.Second)
	for len(counts()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c := counts(); len(c) != 2 || c[0]+c[1] != 100 {
		t.Fatalf("warnings with counts %v, want two that add up to 100", c)
	}
	drop(1)
	deadline = time.Now().Add(5 * time.Second)
	for len(counts()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c := counts(); len(c) != 3 || c[2] != 1 {
		t.Fatalf("warnings with counts %v, want a third one of 1", c)
	}
	if n := h.counters.disconnects[endSlow].Load(); n != 101 {
		t.Fatalf("%d slow drops counted, want 101", n)
	}
}
