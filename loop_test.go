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
func idleSubscriber(limit int, gate *wakeGate, out output) *subscriber {
	s := newSubscriber([]string{"t"}, limit, gate, out)
	s.idle()
	return s
}

// TestLoopKeepsTheEndReason: a stream dropped as slow, whose pending write
// then fails (its connection closed under it), ends as slow, so that it
// is not counted a second time as a client disconnect.
func TestLoopKeepsTheEndReason(t *testing.T) {
	for _, reason := range []endReason{endSlow, endShutdown} {
		sub := idleSubscriber(16, newWakeGate(), failingOutput{})
		sub.enqueue(transport.NewEvent("e", 1, transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}, time.Now()))
		sub.finish(reason)
		h := &Subscribe{}
		if got := h.loop(&stream{out: failingOutput{}, sub: sub}, nil); got != reason {
			t.Errorf("ended as %s, want %s", got, reason)
		}
	}
	sub := idleSubscriber(16, newWakeGate(), failingOutput{})
	sub.enqueue(transport.NewEvent("e", 1, transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}, time.Now()))
	if got := (&Subscribe{}).loop(&stream{out: failingOutput{}, sub: sub}, nil); got != endClient {
		t.Errorf("a failed write ended the stream as %s, want client", got)
	}
}
