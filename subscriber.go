package caddysse

import (
	"sync"
	"sync/atomic"

	"github.com/ssehub/caddy-sse/transport"
)

// endReason says why a stream ended; they label the disconnect metrics.
type endReason int32

const (
	endNone        endReason = iota
	endClient                // the client went away or a write failed
	endSlow                  // the subscriber's queue overflowed
	endMaxAge                // the stream reached its max_age
	endShutdown              // the config was reloaded or Caddy is stopping
	endCapacity              // refused: max_subscribers reached
	endResync                // the transport could not deliver every event in order
	endUnavailable           // refused: the transport is unavailable
	numEndReasons
)

var endReasonNames = [numEndReasons]string{"", "client", "slow", "max_age", "shutdown", "capacity", "resync", "unavailable"}

func (r endReason) String() string { return endReasonNames[r] }

// maxSpareQueue is the largest queue capacity a subscriber keeps between
// bursts; a larger one is given back to the garbage collector.
const maxSpareQueue = 64

// subscriber is one stream's registration in a hub: the hub's fan-out
// appends events to its queue and wakes its writer, which takes the whole
// queue at once. Neither side ever waits for the other's socket.
type subscriber struct {
	topics []string
	wake   chan struct{} // capacity 1: "look at me"
	gated  *wakeGate     // hands out wake-ups in turn; nil: wake at once
	gate   uint8         // where it stands with gated; guarded by gated.mu

	// guarded by the hub's lock
	slots      []int // index in each topic's subscriber list
	registered bool
	lastSeq    uint64 // last event queued; set only by the hub's fan-out

	watched bool // the transport watches its topics; owned by the stream's goroutine

	mu     sync.Mutex
	queue  []*transport.Event
	limit  int
	closed bool

	spare []*transport.Event // owned by the writer

	end   atomic.Int32 // endReason, set once
	beat  atomic.Bool  // a heartbeat is due
	wrote atomic.Bool  // something was written since the last heartbeat tick

	conn atomic.Pointer[connOutput] // the connection, once taken over
}

func newSubscriber(topics []string, limit int) *subscriber {
	return &subscriber{
		topics: topics,
		wake:   make(chan struct{}, 1),
		limit:  limit,
	}
}

// wakeUp wakes the writer, in its turn: no one waits on it.
func (s *subscriber) wakeUp() {
	if s.gated != nil {
		s.gated.wake(s)
		return
	}
	s.signal()
}

// signal wakes the writer without blocking.
func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueue queues ev. When the queue is full, the subscriber ends as slow,
// its queue is freed and enqueue reports false.
func (s *subscriber) enqueue(ev *transport.Event) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if len(s.queue) >= s.limit {
		s.closed = true
		s.queue = nil
		s.mu.Unlock()
		s.finish(endSlow)
		return false
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	s.wakeUp()
	return true
}

// take hands the writer everything queued so far.
func (s *subscriber) take() []*transport.Event {
	if s.gated != nil {
		s.gated.taking(s)
	}
	s.mu.Lock()
	q := s.queue
	s.queue = s.spare
	s.mu.Unlock()
	s.spare = nil
	return q
}

// recycle gives a queue returned by take back for reuse.
func (s *subscriber) recycle(q []*transport.Event) {
	if cap(q) > maxSpareQueue {
		return
	}
	clear(q)
	s.spare = q[:0]
}

// finish ends the stream for reason, unless it has already ended.
func (s *subscriber) finish(reason endReason) {
	if s.end.CompareAndSwap(int32(endNone), int32(reason)) {
		if out := s.conn.Load(); out != nil && reason != endSlow {
			out.hurry()
		}
		s.wakeUp()
	}
}

func (s *subscriber) endReason() endReason { return endReason(s.end.Load()) }

// topicIndex returns the position of topic in s.topics.
func (s *subscriber) topicIndex(topic string) int {
	for i, t := range s.topics {
		if t == topic {
			return i
		}
	}
	return -1
}

// interrupt cuts short the stream's pending write, if it has taken its
// connection over.
func (s *subscriber) interrupt() {
	if out := s.conn.Load(); out != nil {
		out.abort()
	}
}
