// Package memory implements sse.transports.memory, the default caddy-sse
// transport: one process, history in memory. It is lost when the process
// exits; ids of a new process carry a new epoch, so clients resuming from
// an earlier one are told to reset.
package memory

import (
	"context"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/ssehub/caddy-sse/internal/seqmerge"
	"github.com/ssehub/caddy-sse/internal/shrink"
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
	watched     map[string]int
	watchedPeak int // the most topics since watched was last rebuilt (shrink.Map)
	// patterns counts the WatchPatterns calls not yet undone, per pattern.
	patterns     map[string]int
	patternsPeak int

	history
	keys keyRecords
	pres presence // who is there (presence.go)
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
	t.patterns = make(map[string]int)
	t.history.init(func(ev *transport.Event) {
		ev.MarkEvicted()
		sink.Evicted(ev)
	})
	t.keys.init()
	t.pres.open(sink)
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
		if key != nil && pos < key.positions {
			receipts[i] = key.receipt(t.epoch, pos, msg)
			continue
		}
		t.seq++
		ev := transport.NewEvent(t.epoch, t.seq, msg, now)
		t.headID = ev.ID
		t.add(ev, t.limits.Events)
		receipts[i] = transport.Receipt{ID: ev.ID, Topics: ev.Topics, Subscribers: t.sink.Deliver(ev)}
		if key != nil && pos == key.positions {
			key.add(t.seq, receipts[i].Subscribers)
		}
	}
	if key != nil {
		t.keys.resize(key)
		t.keys.trim(t.limits.IdempotencyBudget(), key)
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
	countUp(t.watched, &t.watchedPeak, topics)
	return nil
}

// Unwatch implements transport.Transport.
func (t *Transport) Unwatch(topics []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.watched = countDown(t.watched, &t.watchedPeak, topics)
}

// countUp counts one more watch of each of names in counts (the watches
// of topics, or of patterns); peak is its shrink.Map high-water mark.
func countUp(counts map[string]int, peak *int, names []string) {
	for _, name := range names {
		counts[name]++
	}
	shrink.Grown(counts, peak)
}

// countDown undoes countUp, and returns counts, rebuilt if it shrank
// enough to give memory back.
func countDown(counts map[string]int, peak *int, names []string) map[string]int {
	for _, name := range names {
		switch n := counts[name]; {
		case n > 1:
			counts[name] = n - 1
		case n == 1:
			delete(counts, name)
		}
	}
	return shrink.Map(counts, peak)
}

// Replay implements transport.Transport. A page costs its own events,
// found from each topic's position: no replay is gathered whole to be cut.
func (t *Transport) Replay(_ context.Context, q transport.ReplayQuery) (transport.Replay, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.Replay{}, transport.ErrClosed
	}
	t.expire()
	r := transport.Replay{Head: t.seq, HeadID: t.headID}
	var after uint64
	switch {
	case q.Resume:
		var ok bool
		after, ok = t.resumable(q.LastEventID, q.Topics)
		r.Reset = !ok
		if r.Reset {
			after = max(t.horizon(q.Topics), t.latestStart(q.Topics, q.ResetLatest))
		}
	case q.Latest > 0:
		after = max(t.horizon(q.Topics), t.latestStart(q.Topics, q.Latest))
	default:
		return r, nil
	}
	r.Events, r.More = t.page(q.Topics, after, q.MaxBytes)
	return r, nil
}

// seqOf returns the Seq of the event called id, if it is an event of
// this epoch up to the head.
func (t *Transport) seqOf(id string) (uint64, bool) {
	epoch, seq, ok := transport.ParseID(id)
	if !ok || epoch != t.epoch || seq > t.seq {
		return 0, false
	}
	return seq, true
}

// resumable reports whether every event of topics after the event called
// id is still retained, and that event's seq.
func (t *Transport) resumable(id string, topics []string) (uint64, bool) {
	seq, ok := t.seqOf(id)
	if !ok {
		return 0, false
	}
	for _, name := range topics {
		if t.evictedAfter(name, seq) {
			return 0, false
		}
	}
	return seq, true
}

// horizon returns the newest Seq after which none of topics has lost an
// event: a replay that starts there can be resumed from any of its events.
func (t *Transport) horizon(topics []string) uint64 {
	var h uint64
	for _, name := range topics {
		if tl := t.topics[name]; tl != nil {
			h = max(h, tl.evicted)
		} else {
			h = max(h, t.forgotten)
		}
	}
	return h
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
	t.keys.trim(limits.IdempotencyBudget(), nil)
}

// Stats implements transport.Transport.
func (t *Transport) Stats() transport.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire()
	t.keys.expire(t.now())
	return transport.Stats{
		Topics:      len(t.topics) - t.idle,
		Events:      t.retained,
		Bytes:       t.bytes,
		Head:        t.seq,
		Epoch:       t.epoch,
		Idempotency: t.keys.stats(),
		State:       transport.State{Up: !t.closed, WatchedTopics: len(t.watched), WatchedPatterns: len(t.patterns)},
	}
}

// Disconnect implements transport.Transport: this process is the hub's
// only node, so the sink's count is the whole answer. The sink is called
// under the lock, so that it is never called after Close returns.
func (t *Transport) Disconnect(_ context.Context, d transport.Disconnect) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, transport.ErrClosed
	}
	return t.sink.Disconnect(d), nil
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
	t.pres.close()
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

// page returns the retained events of topics after seq, in Seq order and
// each once, at most maxBytes of them (at least one; 0: all), and whether
// more remain.
func (t *Transport) page(topics []string, seq uint64, maxBytes int) ([]*transport.Event, bool) {
	var one [1][]*record
	lists := one[:0]
	if len(topics) > 1 {
		lists = make([][]*record, 0, len(topics))
	}
	n := 0
	for _, name := range topics {
		if tl := t.topics[name]; tl != nil {
			if l := tl.after(seq); len(l) > 0 {
				lists = append(lists, l)
				n += len(l)
			}
		}
	}
	return mergePage(lists, n, maxBytes)
}

// mergePage merges lists, which hold n records together, into a page of
// at most maxBytes (at least one event; 0: all), in Seq order and each
// event once, and reports whether more remain.
func mergePage(lists [][]*record, n, maxBytes int) ([]*transport.Event, bool) {
	if n == 0 {
		return nil, false
	}
	if maxBytes > 0 {
		n = min(n, maxBytes/64+1) // a guess: most pages hold events of 64 bytes or more
	}
	out := make([]*transport.Event, 0, n)
	size := 0
	more := seqmerge.Merge(lists, recordSeq, func(rec *record) bool {
		if maxBytes > 0 && len(out) > 0 && size+len(rec.ev.Wire) > maxBytes {
			return false
		}
		out = append(out, rec.ev)
		size += len(rec.ev.Wire)
		return true
	})
	return out, more
}

func recordSeq(rec *record) uint64 { return rec.ev.Seq }

// latestStart returns the Seq after which the newest n retained events of
// topics begin: 0 when they have n or fewer, or for n <= 0.
func (t *Transport) latestStart(topics []string, n int) uint64 {
	if n <= 0 {
		return 0
	}
	logs := make([]*topicLog, 0, len(topics))
	for _, name := range topics {
		if tl := t.topics[name]; tl != nil {
			logs = append(logs, tl)
		}
	}
	return latestStartOf(logs, n)
}

// latestStartOf returns the Seq after which the newest n retained events
// of logs begin: 0 when they have n or fewer, or for n <= 0.
func latestStartOf(logs []*topicLog, n int) uint64 {
	if n <= 0 {
		return 0
	}
	tails := make([][]*record, 0, len(logs))
	for _, tl := range logs {
		tails = append(tails, tl.last(n))
	}
	for count := 0; ; {
		next := -1 // the list whose last event is the newest
		for i, l := range tails {
			if len(l) > 0 && (next < 0 || l[len(l)-1].ev.Seq > tails[next][len(tails[next])-1].ev.Seq) {
				next = i
			}
		}
		if next < 0 {
			return 0
		}
		ev := tails[next][len(tails[next])-1].ev
		if count++; count == n {
			return ev.Seq - 1
		}
		for i, l := range tails {
			if len(l) > 0 && l[len(l)-1].ev == ev {
				tails[i] = l[:len(l)-1]
			}
		}
	}
}

// Interface guards
var (
	_ transport.Transport        = (*Transport)(nil)
	_ transport.PatternTransport = (*Transport)(nil)
	_ caddyfile.Unmarshaler      = (*Transport)(nil)
)
