package caddysse

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gated returns n subscribers behind one gate.
func gated(n int) (*wakeGate, []*subscriber) {
	h := &Hub{gate: newWakeGate()}
	subs := make([]*subscriber, n)
	for i := range subs {
		subs[i] = idleSubscriber(h, nil)
	}
	return h.gate, subs
}

// TestWakeGateOrder: once the grants are out, subscribers are woken in
// the order they asked, in batches, as grants come back.
func TestWakeGateOrder(t *testing.T) {
	g, subs := gated(wakeGrants + 3*wakeBatch)
	for _, s := range subs {
		s.wakeUp()
	}
	woken := func() []int {
		var out []int
		for i, s := range subs {
			select {
			case <-s.wake:
				out = append(out, i)
			default:
			}
		}
		return out
	}
	first := woken()
	if len(first) != wakeGrants || first[len(first)-1] != wakeGrants-1 {
		t.Fatalf("first wake-ups %v", first)
	}
	// grants come back one by one: nothing happens until a batch is back
	for i := range wakeBatch - 1 {
		subs[i].take()
	}
	if w := woken(); len(w) != 0 {
		t.Fatalf("woken before a whole batch came back: %v", w)
	}
	subs[wakeBatch-1].take()
	next := woken()
	want := make([]int, wakeBatch)
	for i := range want {
		want[i] = wakeGrants + i
	}
	if !slices.Equal(next, want) {
		t.Fatalf("second batch %v, want %v", next, want)
	}
	// a stream that ends gives its grant back, and is skipped in line
	g.forget(subs[wakeGrants+wakeBatch]) // in line: skipped
	for i := wakeBatch; i < 2*wakeBatch; i++ {
		g.forget(subs[i]) // granted: grants back
	}
	next = woken()
	if len(next) != wakeBatch || next[0] != wakeGrants+wakeBatch+1 {
		t.Fatalf("third batch %v, want %d from %d on", next, wakeBatch, wakeGrants+wakeBatch+1)
	}
}

// TestWakeGateLosesNoWakeUp runs writers and wakers concurrently, as the
// hub does: every wake-up asked for is followed by a writer taking its
// queue, and in the end every grant is back.
func TestWakeGateLosesNoWakeUp(t *testing.T) {
	const n, rounds = 500, 200
	g, subs := gated(n)
	var asked, served [n]atomic.Int64
	done := make(chan struct{})
	var writers sync.WaitGroup
	for i, s := range subs {
		writers.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-s.wake:
				}
				// as a writer does: give the grant back, then take
				// everything asked for so far
				s.take()
				served[i].Store(asked[i].Load())
				s.idle()
			}
		})
	}
	var wakers sync.WaitGroup
	for w := range 4 {
		wakers.Go(func() {
			for r := range rounds {
				for i := w; i < n; i += 4 {
					asked[i].Store(int64(r + 1))
					subs[i].wakeUp()
				}
			}
		})
	}
	wakers.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for i := range subs {
		for served[i].Load() != rounds {
			if time.Now().After(deadline) {
				g.mu.Lock()
				t.Fatalf("subscriber %d: served %d of %d; gate state %d, free %d", i, served[i].Load(), rounds, subs[i].gate.Load(), g.free)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(done)
	writers.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.free != wakeGrants || g.head != len(g.waiting) {
		t.Fatalf("grants back: %d of %d, %d in line", g.free, wakeGrants, len(g.waiting)-g.head)
	}
}

// TestWakeGateBusyWritersHoldNoGrant: writers busy writing (blocked on
// clients that do not read, or still sending their stream's start) are
// told to look at their queues again without taking a grant, so that any
// number of them leave every grant to the writers waiting for work.
func TestWakeGateBusyWritersHoldNoGrant(t *testing.T) {
	g, subs := gated(2 * wakeGrants)
	busy, waiting := subs[:wakeGrants+10], subs[wakeGrants+10:]
	for _, s := range busy {
		s.take() // as a writer does before it writes
		s.wakeUp()
	}
	for i, s := range busy {
		select {
		case <-s.wake:
		default:
			t.Fatalf("busy writer %d was not told to look again", i)
		}
	}
	g.mu.Lock()
	free := g.free
	g.mu.Unlock()
	if free != wakeGrants {
		t.Fatalf("%d grants free, want all %d", free, wakeGrants)
	}
	for _, s := range waiting {
		s.wakeUp()
	}
	for i, s := range waiting {
		select {
		case <-s.wake:
		default:
			t.Fatalf("waiting writer %d was not woken", i)
		}
	}
}
