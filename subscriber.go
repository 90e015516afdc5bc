package caddysse

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// endReason says why a stream ended; they label the disconnect metrics.
type endReason int32

const (
	endNone        endReason = iota
	endClient                // the client went away or a write failed
	endSlow                  // it fell out of the history and the delivery window, or its writes stalled
	endMaxAge                // the stream reached its max_age
	endShutdown              // the config was reloaded or Caddy is stopping
	endCapacity              // refused: max_subscribers reached
	endResync                // the transport could not deliver every event in order
	endUnavailable           // refused: the transport is unavailable
	endExpired               // its token expired
	endRevoked               // an administrator disconnected it (admin API)
	endPerSubject            // a newer stream of its subject took its place (max_streams_per)
	numEndReasons
)

var endReasonNames = [numEndReasons]string{"", "client", "slow", "max_age", "shutdown", "capacity", "resync", "unavailable",
	"expired", "revoked", "per_subject"}

// String returns the reason's label in the metrics.
func (r endReason) String() string { return endReasonNames[r] }

// endWait is how long a stream that the server ends (reload, shutdown,
// max_age, resync) is given to write its final retry hint; a write still
// pending then is cut.
const endWait = 500 * time.Millisecond

// clockBase is the origin of clock.
var clockBase = time.Now()

// clock returns a monotonic time in nanoseconds, never 0.
func clock() int64 { return int64(time.Since(clockBase)) + 1 }

// subscriber is one stream's registration in a hub: its topics, its
// position in the hub's sequence, and how its writer is woken. The hub's
// fan-out wakes the writer, which takes the events after its position
// from the hub's delivery window (or, when it is behind, from the
// history) and moves its position past them. Neither side ever waits for
// the other's socket, and no event is copied or queued per subscriber.
type subscriber struct {
	hub    *Hub
	topics []string
	// patterns it follows besides topics (SPEC section 11): each is a
	// virtual topic of the hub, after its topics in slots and logs
	patterns []string
	subject  string        // its max_streams_per value, else its token's subject; "" for none
	wake     chan struct{} // capacity 1: "look at me"
	gated    *wakeGate     // the hub's: hands out wake-ups in turn
	gate     atomic.Uint32 // where it stands with gated; written under gated.mu

	// guarded by the hub's lock
	slots      []int // index in each topic's subscriber list
	registered bool
	lastSeq    uint64 // last event counted for it; set only by the hub's fan-out

	// set when it is registered, read by its writer
	logs []*topicSubs // its topics in the hub, in the order of topics, then its patterns

	// owned by its writer
	watched         bool // the transport watches its topics
	watchedPatterns bool // and its patterns
	// byPatterns: its pages of the history are read with ReplayPatterns,
	// merging at most maxTopics topics; latest is the LatestPerTopic of
	// its first replay, while its pages go on up to its seam (0 after).
	byPatterns bool
	maxTopics  int
	latest     int
	seam       uint64               // the Seq up to which its first replay covered the history
	cursors    [][]*transport.Event // scratch space to merge its topics

	// presence (members.go), set before its stream starts: its member on
	// its topics and patterns ("" for none), the topics whose presence it
	// follows, and their events to write (nil without)
	member   string
	presence []string
	feed     *presenceFeed

	// pos is the Seq up to which its writer has taken the events of its
	// topics: every later one is still in the hub's window or the
	// history, or it is slow. noPosition until its replay is read.
	pos atomic.Uint64
	// paging is set while its writer reads a page of the history, whose
	// events it holds before its position moves past them.
	paging atomic.Bool
	// replaying is set while its position is behind its seam: it reads
	// the replay it was owed on connection (counted in Hub.replaying).
	replaying atomic.Bool

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

// noPosition is the position of a subscriber whose replay has not been
// read yet: nothing it will be sent can have left the hub yet.
const noPosition = ^uint64(0)

// outputRef holds an output, so that it can be swapped atomically when a
// stream takes its connection over.
type outputRef struct{ output }

// newSubscriber returns a subscriber of hub, woken through its wake gate,
// whose stream writes to out and is busy starting.
func newSubscriber(hub *Hub, topics []string, out output) *subscriber {
	s := &subscriber{
		hub:    hub,
		topics: topics,
		wake:   make(chan struct{}, 1),
		gated:  hub.gate,
	}
	if len(topics) > 1 {
		s.cursors = make([][]*transport.Event, 0, len(topics))
	}
	s.pos.Store(noPosition)
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

// behind reports whether the subscriber has not taken the event at seq:
// once that event has left the hub's window and the history, it cannot
// be served in full. A subscriber reading a page of the history holds
// what it read before its position moves: it finds out from the next
// page.
func (s *subscriber) behind(seq uint64) bool {
	return s.pos.Load() < seq && !s.paging.Load()
}

// replay records whether the subscriber reads its replay, behind its seam,
// in its hub's count.
func (s *subscriber) replay(on bool) {
	if s.replaying.CompareAndSwap(!on, on) {
		if on {
			s.hub.replaying.Add(1)
		} else {
			s.hub.replaying.Add(-1)
		}
	}
}

// take tells that the writer looks for work: it is busy from then on,
// until it calls idle, and gives its wake-up grant back.
func (s *subscriber) take() {
	s.busy.Store(true) // before the grant goes back: wake-ups need none from now on
	s.gated.taking(s)
}

// idle tells that the writer is about to wait for work.
func (s *subscriber) idle() { s.busy.Store(false) }

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

// patternIndex returns the position of pattern in s.patterns.
func (s *subscriber) patternIndex(pattern string) int {
	for i, p := range s.patterns {
		if p == pattern {
			return i
		}
	}
	return -1
}

// topicSubs are the local subscribers of one topic, or of one pattern,
// and its part of the hub's delivery window.
type topicSubs struct {
	subs  []*subscriber // guarded by the hub's lock
	stamp uint64        // a pattern's: the last event Deliver held it for; Deliver's own

	// guarded by the backlog's lock
	events []*transport.Event // the topic's events in the window, from head, in Seq order
	head   int
	floor  uint64 // events of the topic up to this Seq may be missing from events
}

func (ts *topicSubs) front() *transport.Event {
	if ts.head == len(ts.events) {
		return nil
	}
	return ts.events[ts.head]
}

// after returns the topic's events in the window newer than seq.
func (ts *topicSubs) after(seq uint64) []*transport.Event {
	evs := ts.events[ts.head:]
	if len(evs) == 0 || evs[0].Seq > seq {
		return evs
	}
	i := sort.Search(len(evs), func(i int) bool { return evs[i].Seq > seq })
	return evs[i:]
}

// removeAt takes s, at slot, out of ts.subs, moving the last subscriber
// into its slot; it returns that subscriber, whose slot the caller sets,
// or nil when s was the last. The caller holds the hub's lock.
func (ts *topicSubs) removeAt(s *subscriber, slot int) *subscriber {
	last := len(ts.subs) - 1
	moved := ts.subs[last]
	ts.subs[slot] = moved
	ts.subs[last] = nil
	ts.subs = ts.subs[:last]
	if moved == s {
		return nil
	}
	return moved
}
