package memory

import (
	"context"
	"slices"
	"sync"

	"github.com/ssehub/caddy-sse/transport"
)

// presence counts the members of a hub's topics (transport.PresenceTransport).
// This process is the hub's only node: a member is present on a topic
// between its Join and its Leave, and every Join or Leave is a change. It
// has a lock of its own, apart from the history's, and calls the sink
// under it, so that changes reach it in Version order and never after
// Close.
type presence struct {
	mu      sync.Mutex
	topics  map[string]map[string]struct{} // topic → its members
	version uint64
	sink    transport.PresenceSink // nil: the hub does not take changes
	closed  bool
}

// open binds the presence to sink, which takes the changes if it can.
func (p *presence) open(sink transport.Sink) {
	p.topics = make(map[string]map[string]struct{})
	p.sink, _ = sink.(transport.PresenceSink)
}

// close stops the changes: the sink is not called after it returns.
func (p *presence) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
}

// Join implements transport.PresenceTransport.
func (t *Transport) Join(topic, member string) {
	p := &t.pres
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	m := p.topics[topic]
	if m == nil {
		m = make(map[string]struct{})
		p.topics[topic] = m
	}
	if _, ok := m[member]; ok {
		return
	}
	m[member] = struct{}{}
	p.changed(topic, member, true)
}

// Leave implements transport.PresenceTransport.
func (t *Transport) Leave(topic, member string) {
	p := &t.pres
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.topics[topic]
	if p.closed || m == nil {
		return
	}
	if _, ok := m[member]; !ok {
		return
	}
	delete(m, member)
	if len(m) == 0 {
		delete(p.topics, topic)
	}
	p.changed(topic, member, false)
}

// changed numbers a change and hands it to the sink. The caller holds
// p.mu.
func (p *presence) changed(topic, member string, join bool) {
	p.version++
	if p.sink != nil {
		p.sink.PresenceChanged(transport.PresenceChange{Topic: topic, Member: member, Join: join, Version: p.version})
	}
}

// Presence implements transport.PresenceTransport.
func (t *Transport) Presence(_ context.Context, topic string, max int) (transport.PresenceSnapshot, error) {
	p := &t.pres
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return transport.PresenceSnapshot{}, transport.ErrClosed
	}
	m := p.topics[topic]
	snap := transport.PresenceSnapshot{Count: len(m), Version: p.version}
	if max <= 0 || len(m) == 0 {
		return snap, nil
	}
	all := make([]string, 0, len(m))
	for member := range m {
		all = append(all, member)
	}
	slices.Sort(all)
	snap.Members = all[:min(max, len(all))]
	return snap, nil
}

// PresenceCounts implements transport.PresenceTransport.
func (t *Transport) PresenceCounts(_ context.Context, topics []string) ([]int, error) {
	p := &t.pres
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, transport.ErrClosed
	}
	counts := make([]int, len(topics))
	for i, topic := range topics {
		counts[i] = len(p.topics[topic])
	}
	return counts, nil
}

// Interface guards
var _ transport.PresenceTransport = (*Transport)(nil)
