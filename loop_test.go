package caddysse

import (
	"errors"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// failingOutput is an output whose connection has been closed.
type failingOutput struct{}

func (failingOutput) write([][]byte) error    { return errors.New("use of closed network connection") }
func (failingOutput) flush() error            { return nil }
func (failingOutput) interrupt(time.Duration) {}

// idleSubscriber returns a subscriber whose writer waits for work.
func idleSubscriber(h *Hub, limit int, out output) *subscriber {
	s := newSubscriber(h, []string{"t"}, limit, out)
	s.idle()
	return s
}

// TestLoopKeepsTheEndReason: a stream dropped as slow, whose pending write
// then fails (its connection closed under it), ends as slow, so that it
// is not counted a second time as a client disconnect.
func TestLoopKeepsTheEndReason(t *testing.T) {
	for _, reason := range []endReason{endSlow, endShutdown} {
		sub := idleSubscriber(&Hub{gate: newWakeGate()}, 16, failingOutput{})
		sub.enqueue(transport.NewEvent("e", 1, transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}, time.Now()))
		sub.finish(reason)
		st := &stream{route: &Subscribe{}, out: failingOutput{}, sub: sub}
		if got := st.loop(nil); got != reason {
			t.Errorf("ended as %s, want %s", got, reason)
		}
	}
	sub := idleSubscriber(&Hub{gate: newWakeGate()}, 16, failingOutput{})
	sub.enqueue(transport.NewEvent("e", 1, transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}, time.Now()))
	st := &stream{route: &Subscribe{}, out: failingOutput{}, sub: sub}
	if got := st.loop(nil); got != endClient {
		t.Errorf("a failed write ended the stream as %s, want client", got)
	}
}
