package caddysse

import (
	"sync"
	"sync/atomic"

	"github.com/ssehub/caddy-sse/internal/patternset"
	"github.com/ssehub/caddy-sse/internal/seqmerge"
	"github.com/ssehub/caddy-sse/transport"
)

// DefaultBufferSize is the delivery window of a hub whose routes set no
// buffer: the newest events, by wire bytes, that the hub keeps for its
// streams beyond its history.
const DefaultBufferSize = 1 << 20

// A hub's backlog is its delivery window: the newest events that its
// local streams may still have to write, held once for all of them. A
// stream holds a position (the Seq up to which it has taken its topics'
// events), never a copy or a queue: 10,000 streams 1,000 events behind
// cost the hub those 1,000 events once. Each topic that has local streams
// keeps its part of the window in Seq order (topicSubs.events), and the
// window as a whole is trimmed oldest first once it holds more than the
// largest buffer of the hub's routes. A stream whose position falls
// behind the window reads the history instead, a page at a time; one
// whose next event has left both is slow.
//
// Since a stream is a position, what it has to send lives in the hub and
// not on its writer's stack: the only other state of a write in progress
// is its round (the hub's shared bytes) and how far it got. So a small
// pool of writers could serve streams whose connection was taken over,
// with non-blocking writes, parking a stream until its socket is writable,
// instead of a goroutine each.
type backlog struct {
	mu sync.RWMutex // held for writing by Deliver, for reading by streams

	fifo  []*transport.Event // the window's events in Seq order, from head
	head  int
	bytes int64  // wire bytes of the window's events
	last  uint64 // Seq of the newest event the hub was handed

	// trimmed is the Seq of the newest event trimmed from the window: an
	// event after it has left no topic's part of the window.
	trimmed atomic.Uint64

	// what the window holds at least, the largest of the hub's routes
	maxBytes  int64
	maxEvents int
	windows   map[window]int // the routes' windows in use, counted
}

// window is what one route asks the hub's delivery window to hold: the
// newest bytes of events, and (the v1 meaning of a bare buffer) the
// newest events.
type window struct {
	bytes  int64
	events int
}

func (bl *backlog) init() {
	bl.windows = make(map[window]int)
	bl.maxBytes = DefaultBufferSize
}

// use adds a route's window; the returned function takes it away again.
func (bl *backlog) use(w window) func() {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	bl.windows[w]++
	bl.resize()
	return func() {
		bl.mu.Lock()
		defer bl.mu.Unlock()
		if bl.windows[w]--; bl.windows[w] <= 0 {
			delete(bl.windows, w)
		}
		bl.resize()
	}
}

// resize sets the window to the largest of the routes', or the default
// when no route uses the hub. The window shrinks as new events come.
func (bl *backlog) resize() {
	bl.maxBytes, bl.maxEvents = 0, 0
	for w := range bl.windows {
		bl.maxBytes = max(bl.maxBytes, w.bytes)
		bl.maxEvents = max(bl.maxEvents, w.events)
	}
	if len(bl.windows) == 0 {
		bl.maxBytes = DefaultBufferSize
	}
}

// add puts ev in the window of the topics in held (those with local
// streams, and the patterns matching them), then trims the window (a
// trimmed event leaves the parts of its topics, and of the patterns
// matching them, found in scratch), and appends to gone the events trimmed
// that have left the history too: a stream that has not taken one of them
// can no longer be served in full. The caller holds bl.mu and the hub's
// lock, which guards topics.
func (bl *backlog) add(ev *transport.Event, held []*topicSubs, topics map[string]*topicSubs,
	patterns *patternset.Set[*topicSubs], scratch *[]*topicSubs, gone []*transport.Event) []*transport.Event {
	bl.last = ev.Seq
	if len(held) == 0 {
		return gone // no local stream wants it
	}
	for _, ts := range held {
		ts.events = append(ts.events, ev)
	}
	bl.fifo = append(bl.fifo, ev)
	bl.bytes += int64(len(ev.Wire))
	for bl.over() {
		e := bl.popFront()
		bl.trimmed.Store(e.Seq)
		for _, name := range e.Topics {
			if ts := topics[name]; ts != nil && ts.front() == e {
				ts.popFront()
			}
			if patterns.Len() > 0 { // the patterns' parts: each holds e once, in front if at all
				*scratch = patterns.AppendMatches((*scratch)[:0], name)
				for _, ts := range *scratch {
					if ts.front() == e {
						ts.popFront()
					}
				}
				clear(*scratch)
			}
		}
		if e.Evicted() {
			gone = append(gone, e)
		}
	}
	return gone
}

// over reports whether the window holds more than it must: more bytes and
// more events than the routes ask for, and more than its newest event.
func (bl *backlog) over() bool {
	n := len(bl.fifo) - bl.head
	return n > 1 && n > bl.maxEvents && bl.bytes > bl.maxBytes
}

// compact gives the slots before head back once they are half of s, and
// the whole array once s is empty.
func compact(s []*transport.Event, head int) ([]*transport.Event, int) {
	switch {
	case head == len(s):
		if cap(s) > 1024 {
			return nil, 0
		}
		return s[:0], 0
	case head >= 64 && head*2 >= len(s):
		n := copy(s, s[head:])
		clear(s[n:])
		return s[:n], 0
	}
	return s, head
}

// stats returns the window's size.
func (bl *backlog) stats() WindowStats {
	bl.mu.RLock()
	defer bl.mu.RUnlock()
	return WindowStats{Events: len(bl.fifo) - bl.head, Bytes: bl.bytes, MaxBytes: bl.maxBytes, MaxEvents: bl.maxEvents}
}

// WindowStats describe a hub's delivery window: the newest events held
// once for the hub's local streams, beyond its history.
type WindowStats struct {
	// Events is the number of events in the window.
	Events int `json:"events"`
	// Bytes is their wire bytes.
	Bytes int64 `json:"bytes"`
	// MaxBytes is the largest buffer of the hub's routes, in bytes: the
	// window holds at least this much of the newest events.
	MaxBytes int64 `json:"max_bytes"`
	// MaxEvents is the largest buffer given as a number of events.
	MaxEvents int `json:"max_events,omitempty"`
}

func (ts *topicSubs) popFront() {
	ts.floor = ts.events[ts.head].Seq
	ts.events[ts.head] = nil
	ts.head++
	ts.events, ts.head = compact(ts.events, ts.head)
}

// take appends to parts the wire form of s's next events in the window,
// newer than its position, in Seq order and each once, until they reach
// maxBytes (at least one), moves s's position past them and returns parts
// and how many it took. ok is false when the window does not hold every
// event of s's topics after its position (or its seam): s must read the
// history first.
func (bl *backlog) take(s *subscriber, parts [][]byte, maxBytes int) (_ [][]byte, n int, ok bool) {
	bl.mu.RLock()
	defer bl.mu.RUnlock()
	pos := s.pos.Load()
	if pos < s.seam {
		return parts, 0, false
	}
	for _, ts := range s.logs {
		if pos < ts.floor {
			return parts, 0, false
		}
	}
	if len(s.logs) == 1 {
		parts, n, pos = takeOne(s.logs[0].after(pos), parts, maxBytes)
	} else {
		parts, n, pos = takeMerged(s, pos, parts, maxBytes)
	}
	if n > 0 {
		s.pos.Store(pos)
	}
	return parts, n, true
}

// takeOne takes from one topic's events.
func takeOne(evs []*transport.Event, parts [][]byte, maxBytes int) ([][]byte, int, uint64) {
	size, n := 0, 0
	var pos uint64
	for _, ev := range evs {
		if n > 0 && size+len(ev.Wire) > maxBytes {
			break
		}
		parts = append(parts, ev.Wire)
		size += len(ev.Wire)
		pos = ev.Seq
		n++
	}
	return parts, n, pos
}

// takeMerged takes from several topics' events, merged by Seq; an event
// of several of the topics is taken once. s.cursors is its scratch space.
func takeMerged(s *subscriber, pos uint64, parts [][]byte, maxBytes int) ([][]byte, int, uint64) {
	lists := s.cursors[:0]
	for _, ts := range s.logs {
		if evs := ts.after(pos); len(evs) > 0 {
			lists = append(lists, evs)
		}
	}
	size, n := 0, 0
	seqmerge.Merge(lists, eventSeq, func(ev *transport.Event) bool {
		if n > 0 && size+len(ev.Wire) > maxBytes {
			return false
		}
		parts = append(parts, ev.Wire)
		size += len(ev.Wire)
		pos = ev.Seq
		n++
		return true
	})
	clear(lists)
	s.cursors = lists[:0]
	return parts, n, pos
}

func eventSeq(ev *transport.Event) uint64 { return ev.Seq }

func (bl *backlog) popFront() *transport.Event {
	e := bl.fifo[bl.head]
	bl.fifo[bl.head] = nil
	bl.head++
	bl.bytes -= int64(len(e.Wire))
	bl.fifo, bl.head = compact(bl.fifo, bl.head)
	return e
}
