package caddysse

import (
	"errors"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// failingOutput is an output whose connection has been closed.
type failingOutput struct{}

func (failingOutput) send([][]byte) error { return errors.New("use of closed network connection") }

// TestLoopKeepsTheEndReason: a stream dropped as slow, whose pending write
// then fails (its connection closed under it), ends as slow, so that it
// is not counted a second time as a client disconnect.
func TestLoopKeepsTheEndReason(t *testing.T) {
	for _, reason := range []endReason{endSlow, endShutdown} {
		sub := newSubscriber([]string{"t"}, 16)
		sub.enqueue(transport.NewEvent("e", 1, transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}, time.Now()))
		sub.finish(reason)
		h := &Handler{}
		if got := h.loop(&stream{out: failingOutput{}, sub: sub}, nil); got != reason {
			t.Errorf("ended as %s, want %s", got, reason)
		}
	}
	sub := newSubscriber([]string{"t"}, 16)
	sub.enqueue(transport.NewEvent("e", 1, transport.Message{Topics: []string{"t"}, Data: "x", Retry: -1}, time.Now()))
	if got := (&Handler{}).loop(&stream{out: failingOutput{}, sub: sub}, nil); got != endClient {
		t.Errorf("a failed write ended the stream as %s, want client", got)
	}
}
