// Package memory implements sse.transports.memory, the default caddy-sse
// transport: one process, history in memory. It is lost when the process
// exits; ids of a new process carry a new epoch, so clients resuming from
// an earlier one are told to reset.
package memory

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Transport))
}

// Transport keeps a hub's events in this process's memory and delivers
// them to the local hub directly. It has no options.
type Transport struct {
	mu     sync.Mutex
	epoch  string
	seq    uint64
	headID string // the id of seq
	limits transport.Limits
	sink   transport.Sink
	closed bool
	now    func() time.Time
	// watched counts the Watch calls not yet undone, per topic.
	watched map[string]int

	history
	keys keyRecords
	stop chan struct{}
	done chan struct{}
}

// CaddyModule returns the Caddy module information.
func (*Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sse.transports.memory",
		New: func() caddy.Module { return new(Transport) },
	}
}

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens:
//
//	transport memory
func (*Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // transport name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("transport memory takes no options")
	}
	return nil
}

// janitorInterval is how often expired events and forgotten topics are
// swept when nothing else touches the history.
const janitorInterval = time.Second

// Open implements transport.Transport.
func (t *Transport) Open(_ string, limits transport.Limits, sink transport.Sink) error {
	t.epoch = transport.NewEpoch()
	t.headID = transport.FormatID(t.epoch, 0)
	t.limits = limits
	t.sink = sink
	if t.now == nil {
		t.now = time.Now
	}
	t.watched = make(map[string]int)
	t.history.init()
	t.keys.init()
	t.stop = make(chan struct{})
	t.done = make(chan struct{})
	go t.janitor()
	return nil
}

func (t *Transport) janitor() {
	defer close(t.done)
	tick := time.NewTicker(janitorInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.housekeep()
		}
	}
}

// housekeep expires old events and keys and forgets idle topics.
func (t *Transport) housekeep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire()
	t.sweepIdleTopics()
	t.keys.expire(t.now())
}

// Publish implements transport.Transport. Ids are assigned, events stored
// and delivered under one lock, so that every subscriber sees the hub's
// events in id order.
func (t *Transport) Publish(_ context.Context, req transport.PublishRequest) ([]transport.Receipt, error) {
	receipts := make([]transport.Receipt, len(req.Messages))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	now := t.now()
	var key *keyRecord
	if req.Key != "" {
		var err error
		if key, err = t.keys.claim(req.Key, req.Fingerprint, now); err != nil {
			return nil, err
		}
	}
	for i, msg := range req.Messages {
		pos := req.Offset + i
		if key != nil && pos < len(key.receipts) {
			receipts[i] = key.receipts[pos]
			receipts[i].Repeated = true
			continue
		}
		t.seq++
		ev := transport.NewEvent(t.epoch, t.seq, msg, now)
		t.headID = ev.ID
		t.add(ev, t.limits.Events)
		receipts[i] = transport.Receipt{ID: ev.ID, Topics: ev.Topics, Subscribers: t.sink.Deliver(ev)}
		if key != nil && pos == len(key.receipts) {
			key.receipts = append(key.receipts, receipts[i])
		}
	}
	t.expire()
	t.trimBytes(t.limits.MaxBytes)
	return receipts, nil
}

// Watch implements transport.Transport. Every event reaches the local hub
// whether its topics are watched or not; Watch only counts them, for
// State.WatchedTopics.
func (t *Transport) Watch(_ context.Context, topics []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	for _, name := range topics {
		t.watched[name]++
	}
	return nil
}

// Unwatch implements transport.Transport.
func (t *Transport) Unwatch(topics []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, name := range topics {
		switch n := t.watched[name]; {
		case n > 1:
			t.watched[name] = n - 1
		case n == 1:
			delete(t.watched, name)
		}
	}
}

// Replay implements transport.Transport.
func (t *Transport) Replay(_ context.Context, q transport.ReplayQuery) (transport.Replay, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.Replay{}, transport.ErrClosed
	}
	t.expire()
	r := transport.Replay{Head: t.seq, HeadID: t.headID}
	switch {
	case q.Resume:
		after, ok := t.resumable(q.LastEventID, q.Topics)
		r.Reset = !ok
		if r.Reset && q.ResetLatest > 0 {
			r.Events = t.latest(q.Topics, q.ResetLatest)
		} else {
			r.Events = t.since(q.Topics, after)
		}
	case q.Latest > 0:
		r.Events = t.latest(q.Topics, q.Latest)
	}
	return r, nil
}

// resumable reports whether every event of topics after the event called
// id is still retained, and that event's seq.
func (t *Transport) resumable(id string, topics []string) (uint64, bool) {
	epoch, seq, ok := transport.ParseID(id)
	if !ok || epoch != t.epoch || seq > t.seq {
		return 0, false
	}
	for _, name := range topics {
		if t.evictedAfter(name, seq) {
			return 0, false
		}
	}
	return seq, true
}

// SetLimits implements transport.Transport.
func (t *Transport) SetLimits(limits transport.Limits) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.limits = limits
	for _, tl := range t.topics {
		t.trimTopic(tl, limits.Events)
	}
	t.expire()
	t.trimBytes(limits.MaxBytes)
}

// Stats implements transport.Transport.
func (t *Transport) Stats() transport.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire()
	return transport.Stats{
		Topics: len(t.topics) - t.idle,
		Events: t.retained,
		Bytes:  t.bytes,
		Head:   t.seq,
		Epoch:  t.epoch,
		State:  transport.State{Up: !t.closed, WatchedTopics: len(t.watched)},
	}
}

// Close implements transport.Transport.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	return nil
}

// expire drops events older than the TTL.
func (t *Transport) expire() {
	if t.limits.TTL <= 0 {
		return
	}
	cutoff := t.now().Add(-t.limits.TTL)
	for {
		rec := t.oldest()
		if rec == nil || !rec.ev.Time.Before(cutoff) {
			return
		}
		t.evictOldest()
	}
}

// merged returns the events of lists in Seq order, without duplicates.
func merged(lists [][]*record) []*transport.Event {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	if n == 0 {
		return nil
	}
	out := make([]*transport.Event, 0, n)
	for _, l := range lists {
		for _, rec := range l {
			out = append(out, rec.ev)
		}
	}
	if len(lists) > 1 {
		slices.SortFunc(out, func(a, b *transport.Event) int {
			switch {
			case a.Seq < b.Seq:
				return -1
			case a.Seq > b.Seq:
				return 1
			}
			return 0
		})
		out = slices.CompactFunc(out, func(a, b *transport.Event) bool { return a.Seq == b.Seq })
	}
	return out
}

// since returns the retained events of topics after seq.
func (t *Transport) since(topics []string, seq uint64) []*transport.Event {
	lists := make([][]*record, 0, len(topics))
	for _, name := range topics {
		if tl := t.topics[name]; tl != nil {
			lists = append(lists, tl.after(seq))
		}
	}
	return merged(lists)
}

// latest returns the newest n retained events of topics.
func (t *Transport) latest(topics []string, n int) []*transport.Event {
	lists := make([][]*record, 0, len(topics))
	for _, name := range topics {
		if tl := t.topics[name]; tl != nil {
			lists = append(lists, tl.last(n))
		}
	}
	out := merged(lists)
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// Interface guards
var (
	_ transport.Transport   = (*Transport)(nil)
	_ caddyfile.Unmarshaler = (*Transport)(nil)
)
