package transporttest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// Recorder is a transport.Sink for tests: it keeps every event delivered
// to it, every interruption and every disconnect request, lets a test wait
// for deliveries and disconnect requests, and notes
// every breach of the sink's side of the contract it can see (calls that
// overlap, events out of Seq order or delivered twice, calls after the
// transport was closed), which fail the test that made it when it ends.
type Recorder struct {
	mu          sync.Mutex
	events      []*transport.Event
	interrupts  []Interruption
	evicted     []*transport.Event
	disconnects []transport.Disconnect
	changed     chan struct{} // closed and replaced on every delivery and disconnect request
	subscribers int
	ended       int // what Disconnect returns
	onDeliver   func(*transport.Event)
	lastSeq     uint64
	problems    []string

	inside atomic.Bool
	closed atomic.Bool
}

// Interruption is one call of Recorder.Interrupt.
type Interruption struct {
	// Topics as the transport passed them; nil means every stream.
	Topics []string
	// Reason as the transport passed it.
	Reason string
}

// NewRecorder returns a recorder whose Deliver reports one subscriber
// and whose Disconnect reports no stream ended, and makes t fail, when it ends, if the recorder saw a breach of the
// contract.
func NewRecorder(t testing.TB) *Recorder {
	r := &Recorder{changed: make(chan struct{}), subscribers: 1}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.problems {
			t.Error(p)
		}
	})
	return r
}

// Deliver implements transport.Sink. It records ev, calls the function
// set with OnDeliver, and returns the count set with SetSubscribers.
func (r *Recorder) Deliver(ev *transport.Event) int {
	if r.inside.CompareAndSwap(false, true) {
		defer r.inside.Store(false)
	} else {
		r.problem("Deliver of %s called while another call of the sink was running", ev.ID)
	}
	if r.closed.Load() {
		r.problem("Deliver of %s called after the transport's Close returned", ev.ID)
	}
	r.mu.Lock()
	if ev.Seq <= r.lastSeq {
		r.problems = append(r.problems, fmt.Sprintf("delivered %s (Seq %d) after Seq %d: not in increasing Seq order, or twice", ev.ID, ev.Seq, r.lastSeq))
	}
	r.lastSeq = max(r.lastSeq, ev.Seq)
	r.events = append(r.events, ev)
	n, f := r.subscribers, r.onDeliver
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if f != nil {
		f(ev)
	}
	return n
}

// Interrupt implements transport.Sink; it records the call.
func (r *Recorder) Interrupt(topics []string, reason string) {
	if r.inside.CompareAndSwap(false, true) {
		defer r.inside.Store(false)
	} else {
		r.problem("Interrupt(%q, %q) called while another call of the sink was running", topics, reason)
	}
	if r.closed.Load() {
		r.problem("Interrupt(%q, %q) called after the transport's Close returned", topics, reason)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.interrupts = append(r.interrupts, Interruption{Topics: slices.Clone(topics), Reason: reason})
}

// Evicted implements transport.Sink; it records the call.
func (r *Recorder) Evicted(ev *transport.Event) {
	if r.inside.CompareAndSwap(false, true) {
		defer r.inside.Store(false)
	} else {
		r.problem("Evicted(%s) called while another call of the sink was running", ev.ID)
	}
	if r.closed.Load() {
		r.problem("Evicted(%s) called after the transport's Close returned", ev.ID)
	}
	if !ev.Evicted() {
		r.problem("Evicted(%s) called before the event was marked evicted", ev.ID)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evicted = append(r.evicted, ev)
}

// Disconnect implements transport.Sink: it records d and returns the
// count set with SetDisconnected. It may overlap the other calls of the
// sink (the contract does not order it with them), but must not come
// after the transport's Close returned.
func (r *Recorder) Disconnect(d transport.Disconnect) int {
	if r.closed.Load() {
		r.problem("Disconnect(%+v) called after the transport's Close returned", d)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disconnects = append(r.disconnects, d)
	close(r.changed)
	r.changed = make(chan struct{})
	return r.ended
}

// Disconnects returns the disconnect requests so far, in order.
func (r *Recorder) Disconnects() []transport.Disconnect {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clip(r.disconnects)
}

// SetDisconnected sets what Disconnect returns from now on: the number of
// streams a request ended.
func (r *Recorder) SetDisconnected(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = n
}

// AwaitDisconnects waits until at least n disconnect requests have been
// received and returns all of them. It fails t after Patience.
func (r *Recorder) AwaitDisconnects(t testing.TB, n int) []transport.Disconnect {
	t.Helper()
	deadline := time.NewTimer(Patience)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ds, changed := slices.Clip(r.disconnects), r.changed
		r.mu.Unlock()
		if len(ds) >= n {
			return ds
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waited %v for %d disconnect requests; got %+v", Patience, n, ds)
		}
	}
}

// EvictedEvents returns the events reported evicted so far, in order.
func (r *Recorder) EvictedEvents() []*transport.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clip(r.evicted)
}

// SetSubscribers sets what Deliver returns from now on.
func (r *Recorder) SetSubscribers(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subscribers = n
}

// OnDeliver sets a function that Deliver calls with every event after
// recording it, from inside Deliver: it must return quickly and must not
// call the transport itself (it may start goroutines that do).
func (r *Recorder) OnDeliver(f func(*transport.Event)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onDeliver = f
}

// Closed tells the recorder that the transport's Close has returned: a
// later call of the sink is a breach of the contract.
func (r *Recorder) Closed() {
	r.closed.Store(true)
}

// Events returns the events delivered so far, in delivery order.
func (r *Recorder) Events() []*transport.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clip(r.events)
}

// Len returns the number of events delivered so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// Interrupts returns the interruptions so far, in order.
func (r *Recorder) Interrupts() []Interruption {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clip(r.interrupts)
}

// Await waits until at least n events have been delivered and returns
// all delivered events. It fails t after Patience.
func (r *Recorder) Await(t testing.TB, n int) []*transport.Event {
	t.Helper()
	return r.AwaitFunc(t, fmt.Sprintf("%d delivered events", n), func(evs []*transport.Event) bool {
		return len(evs) >= n
	})
}

// AwaitSeq waits until an event with Seq seq or higher has been delivered
// and returns all delivered events. It fails t after Patience.
func (r *Recorder) AwaitSeq(t testing.TB, seq uint64) []*transport.Event {
	t.Helper()
	return r.AwaitFunc(t, fmt.Sprintf("the delivery of Seq %d", seq), func(evs []*transport.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Seq >= seq
	})
}

// AwaitFunc waits until done, called with the events delivered so far
// after every delivery, returns true, and returns those events. It fails t
// after Patience, saying it waited for what.
func (r *Recorder) AwaitFunc(t testing.TB, what string, done func([]*transport.Event) bool) []*transport.Event {
	t.Helper()
	deadline := time.NewTimer(Patience)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		evs, changed := slices.Clip(r.events), r.changed
		r.mu.Unlock()
		if done(evs) {
			return evs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waited %v for %s; %d events were delivered, the last %s", Patience, what, len(evs), lastID(evs))
		}
	}
}

func (r *Recorder) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func lastID(evs []*transport.Event) string {
	if len(evs) == 0 {
		return "none"
	}
	return evs[len(evs)-1].ID
}

// Interface guards
var _ transport.Sink = (*Recorder)(nil)
