package caddysse

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// endReason says why a stream ended; they label the disconnect metrics.
type endReason int32

const (
	endNone        endReason = iota
	endClient                // the client went away or a write failed
	endSlow                  // the subscriber's queue overflowed or its writes stalled
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

// endWait is how long a stream that the server ends (reload, shutdown,
// max_age, resync) is given to write its final retry hint; a write still
// pending then is cut.
const endWait = 500 * time.Millisecond

// clockBase is the origin of clock.
var clockBase = time.Now()

// clock returns a monotonic time in nanoseconds, never 0.
func clock() int64 { return int64(time.Since(clockBase)) + 1 }

// subscriber is one stream's registration in a hub: the hub's fan-out
// appends events to its queue and wakes its writer, which takes the whole
// queue at once. Neither side ever waits for the other's socket.
type subscriber struct {
	hub    *Hub
	topics []string
	wake   chan struct{} // capacity 1: "look at me"
	gated  *wakeGate     // the hub's: hands out wake-ups in turn
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

	// busy is set while the writer writes (or starts its stream), and
	// pieces counts the pieces it began writing. A busy writer needs no
	// wake-up grant (see wakeGate); one busy on the same piece for too
	// long has stalled (see stuckFor).
	busy   atomic.Bool
	pieces atomic.Uint64

	// owned by the handler's sweeper
	seenPieces uint64 // pieces when the sweeper last looked
	stuckSince int64  // clock when the sweeper first saw it busy on seenPieces; 0: not busy

	out atomic.Pointer[outputRef] // where the stream writes
}

// outputRef holds an output, so that it can be swapped atomically when a
// stream takes its connection over.
type outputRef struct{ output }

// newSubscriber returns a subscriber of hub, woken through its wake gate,
// whose stream writes to out and is busy starting.
func newSubscriber(hub *Hub, topics []string, limit int, out output) *subscriber {
	s := &subscriber{
		hub:    hub,
		topics: topics,
		wake:   make(chan struct{}, 1),
		gated:  hub.gate,
		limit:  limit,
	}
	s.busy.Store(true)
	if out != nil {
		s.out.Store(&outputRef{out})
	}
	return s
}

// setOutput makes the stream write to out from now on. A stream that has
// already ended has out interrupted, as its previous output was.
func (s *subscriber) setOutput(out output) {
	s.out.Store(&outputRef{out})
	switch s.endReason() {
	case endNone:
	case endSlow:
		s.interrupt()
	default:
		s.hurry()
	}
}

// interrupt makes the stream's pending and later writes fail at once.
func (s *subscriber) interrupt() {
	if ref := s.out.Load(); ref != nil {
		ref.interrupt(0)
	}
}

// hurry bounds the stream's pending and later writes to endWait.
func (s *subscriber) hurry() {
	if ref := s.out.Load(); ref != nil {
		ref.interrupt(endWait)
	}
}

// stuckFor tells the sweeper, looking at clock now, for how long the
// writer has been busy on one piece of writing (as far as the sweeper's
// looks can tell): 0 when it is not busy or has moved on since the last
// look.
func (s *subscriber) stuckFor(now int64) time.Duration {
	busy, pieces := s.busy.Load(), s.pieces.Load()
	switch {
	case !busy:
		s.stuckSince = 0
	case pieces != s.seenPieces || s.stuckSince == 0:
		s.stuckSince = now
	}
	s.seenPieces = pieces
	if s.stuckSince == 0 {
		return 0
	}
	return time.Duration(now - s.stuckSince)
}

// wakeUp wakes the writer, in its turn: no one waits on it.
func (s *subscriber) wakeUp() { s.gated.wake(s) }

// signal wakes the writer without blocking.
func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueue queues ev. When the queue is full, the subscriber ends as slow,
// its queue is freed and enqueue reports false; the caller drops it
// (Hub.dropSlow).
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

// take hands the writer everything queued so far. The writer is busy from
// then on, until it calls idle.
func (s *subscriber) take() []*transport.Event {
	s.busy.Store(true) // before the grant goes back: wake-ups need none from now on
	s.gated.taking(s)
	s.mu.Lock()
	q := s.queue
	s.queue = s.spare
	s.mu.Unlock()
	s.spare = nil
	return q
}

// idle tells that the writer is about to wait for work.
func (s *subscriber) idle() { s.busy.Store(false) }

// recycle gives a queue returned by take back for reuse.
func (s *subscriber) recycle(q []*transport.Event) {
	if cap(q) > maxSpareQueue {
		return
	}
	clear(q)
	s.spare = q[:0]
}

// finish ends the stream for reason, unless it has already ended, and
// reports whether it did. A stream the server ends gets endWait to write
// its final retry hint; a slow one is cut by Hub.dropSlow.
func (s *subscriber) finish(reason endReason) bool {
	if !s.end.CompareAndSwap(int32(endNone), int32(reason)) {
		return false
	}
	if reason != endSlow {
		s.hurry()
	}
	s.wakeUp()
	return true
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
