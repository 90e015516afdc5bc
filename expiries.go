package caddysse

import (
	"container/heap"
	"sync"
	"time"
)

// expiries ends a route's streams when their tokens expire, with one
// timer for them all: a stream costs a slot of a heap, not a timer of its
// own (136 bytes per idle stream).
type expiries struct {
	mu    sync.Mutex
	queue expiryQueue
	timer *time.Timer // fires at the earliest expiry; nil before the first
	stop  bool
}

// expiry is a stream's slot: when its token expires.
type expiry struct {
	at int64 // unix nanoseconds
	st *stream
}

// expiryQueue is a min-heap of expiries by time; a stream knows its slot's
// index (stream.expiryAt), to leave it when it ends first.
type expiryQueue []expiry

// Len implements heap.Interface.
func (q expiryQueue) Len() int { return len(q) }

// Less implements heap.Interface: the earliest first.
func (q expiryQueue) Less(i, j int) bool { return q[i].at < q[j].at }

// Swap implements heap.Interface, and keeps the streams' indexes.
func (q expiryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].st.expiryAt, q[j].st.expiryAt = i, j
}

// Push implements heap.Interface.
func (q *expiryQueue) Push(x any) {
	e := x.(expiry)
	e.st.expiryAt = len(*q)
	*q = append(*q, e)
}

// Pop implements heap.Interface.
func (q *expiryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = expiry{}
	*q = old[:len(old)-1]
	e.st.expiryAt = -1
	return e
}

// add ends st when at comes (at once if it has).
func (x *expiries) add(st *stream, at time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stop {
		return
	}
	heap.Push(&x.queue, expiry{at: at.UnixNano(), st: st})
	if x.queue[0].st == st {
		x.arm()
	}
}

// remove takes st out, once it has ended.
func (x *expiries) remove(st *stream) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if st.expiryAt >= 0 && st.expiryAt < len(x.queue) && x.queue[st.expiryAt].st == st {
		heap.Remove(&x.queue, st.expiryAt)
	}
	if len(x.queue) == 0 {
		x.shrink()
	}
}

// arm sets the timer to the earliest expiry. The caller holds mu.
func (x *expiries) arm() {
	wait := time.Duration(x.queue[0].at - time.Now().UnixNano())
	if x.timer == nil {
		x.timer = time.AfterFunc(wait, x.fire)
		return
	}
	x.timer.Reset(wait)
}

// fire ends the streams whose tokens have expired, and sets the timer to
// the next expiry.
func (x *expiries) fire() {
	x.mu.Lock()
	now := time.Now().UnixNano()
	var due []*stream
	for len(x.queue) > 0 && x.queue[0].at <= now {
		due = append(due, heap.Pop(&x.queue).(expiry).st)
	}
	if len(x.queue) > 0 && !x.stop {
		x.arm()
	}
	x.mu.Unlock()
	for _, st := range due {
		st.sub.finish(endExpired)
	}
}

// shrink gives a large empty queue's memory back. The caller holds mu.
func (x *expiries) shrink() {
	if cap(x.queue) > 1024 {
		x.queue = nil
	}
}

// close stops the timer: the route's streams are ending.
func (x *expiries) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.stop = true
	if x.timer != nil {
		x.timer.Stop()
	}
}
