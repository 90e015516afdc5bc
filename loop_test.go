package caddysse

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

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
