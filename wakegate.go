package caddysse

import "sync"

// Wake-up grants of a hub's stream writers.
const (
	// wakeGrants is how many writers may be woken and not yet have taken
	// their queue at once: well under the 256 goroutines of the
	// scheduler's local run queue.
	wakeGrants = 128
	// wakeBatch is how many returned grants are handed out at once.
	wakeBatch = 32
)

// Where a subscriber stands with its hub's wake gate.
const (
	gateIdle    uint32 = iota // not woken
	gateWaiting               // in line for a grant
	gateGranted               // woken; its writer has not taken its queue yet
	gateGone                  // its stream has ended
)

// wakeGate hands out the wake-ups of a hub's stream writers in the order
// they were asked for, with at most wakeGrants outstanding.
//
// An event published to thousands of subscribers would otherwise make
// thousands of goroutines runnable at once. Go's scheduler keeps 256 in a
// processor's queue and moves the rest to its global queue, which it
// serves only now and then while the writers that caught up keep being
// woken again: under load, a few streams then fall seconds behind. In
// line, a writer waits about one round of the others. Grants come back
// when a writer takes its queue, and go out again in batches, which the
// scheduler runs in the order given; handed on one by one, each would
// jump the queue. Only writers waiting for work get grants: a writer busy
// writing, however long it is blocked on its client, holds none.
type wakeGate struct {
	mu      sync.Mutex
	free    int
	waiting []*subscriber // FIFO from head
	head    int
}

func newWakeGate() *wakeGate {
	return &wakeGate{free: wakeGrants}
}

// wake wakes s's writer, now if a grant is free, else in its turn. A
// writer that is busy writing (or starting its stream) needs no grant: it
// is told to look at its queue again when it is done, which makes no
// goroutine runnable now. So a writer blocked on a client that does not
// read holds no grant, however long it blocks.
//
// A writer already woken or in line (or gone) is left alone without taking
// the gate's lock: in a burst, an event reaches thousands of writers that
// have not taken the last one yet. The event was put where the writer
// takes it from before the call, and a writer gives its grant back (the
// state goes back to idle) before it takes what is there: a state read
// as not idle means the writer will see the event.
func (g *wakeGate) wake(s *subscriber) {
	if s.gate.Load() != gateIdle {
		return // already woken or in line, or gone
	}
	if s.busy.Load() {
		s.signal()
		return
	}
	g.mu.Lock()
	if s.gate.Load() != gateIdle {
		g.mu.Unlock()
		return
	}
	if s.busy.Load() {
		g.mu.Unlock()
		s.signal()
		return
	}
	if g.free == 0 {
		s.gate.Store(gateWaiting)
		g.waiting = append(g.waiting, s)
		g.mu.Unlock()
		return
	}
	g.free--
	s.gate.Store(gateGranted)
	g.mu.Unlock()
	s.signal()
}

// taking tells the gate that s's writer takes its queue: its grant comes
// back.
func (g *wakeGate) taking(s *subscriber) {
	g.mu.Lock()
	if s.gate.Load() != gateGranted {
		g.mu.Unlock()
		return
	}
	s.gate.Store(gateIdle)
	g.release()
}

// forget takes an ended stream's subscriber out of the gate for good,
// giving back its grant if it held one.
func (g *wakeGate) forget(s *subscriber) {
	g.mu.Lock()
	granted := s.gate.Load() == gateGranted
	s.gate.Store(gateGone) // if in line, it is skipped when its turn comes
	if !granted {
		g.mu.Unlock()
		return
	}
	g.release()
}

// release returns one grant and hands out a batch to those in line once
// enough have come back. It is called with g.mu held and releases it.
func (g *wakeGate) release() {
	g.free++
	if g.free < wakeBatch && g.free < wakeGrants {
		g.mu.Unlock()
		return
	}
	var granted [wakeGrants]*subscriber // signalled once the lock is released
	batch := granted[:0]
	for g.free > 0 && g.head < len(g.waiting) {
		next := g.waiting[g.head]
		g.waiting[g.head] = nil
		g.head++
		if next.gate.Load() != gateWaiting {
			continue
		}
		next.gate.Store(gateGranted)
		g.free--
		batch = append(batch, next)
	}
	if g.head == len(g.waiting) {
		g.waiting, g.head = g.waiting[:0], 0
	} else if g.head >= 1024 && g.head*2 >= len(g.waiting) {
		n := copy(g.waiting, g.waiting[g.head:])
		clear(g.waiting[n:])
		g.waiting, g.head = g.waiting[:n], 0
	}
	g.mu.Unlock()
	for _, s := range batch {
		s.signal()
	}
}
