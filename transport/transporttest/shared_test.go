package transporttest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/memory"
	"github.com/ssehub/caddy-sse/transport/transporttest"
)

// sharedHub lets several nodes share one memory transport, so that the
// suite's cross-node cases can be run (and seen to fail) without Redis.
// Publishes and disconnect requests are serialised, so that the fan-out
// sink knows which node's sink counts for the receipt or the request.
type sharedHub struct {
	tr *memory.Transport

	pubMu     sync.Mutex // held through a publish or a disconnect request
	publisher *sharedNode

	nodesMu sync.Mutex // held through a delivery
	nodes   []*sharedNode
}

// Deliver hands ev to every open node and returns what the publishing
// node's sink returned.
func (h *sharedHub) Deliver(ev *transport.Event) int {
	h.nodesMu.Lock()
	defer h.nodesMu.Unlock()
	n := 0
	for _, nd := range h.nodes {
		if c := nd.sink.Deliver(ev); nd == h.publisher {
			n = c
		}
	}
	return n
}

// Interrupt hands the call to every open node.
func (h *sharedHub) Interrupt(topics []string, reason string) {
	h.nodesMu.Lock()
	defer h.nodesMu.Unlock()
	for _, nd := range h.nodes {
		nd.sink.Interrupt(topics, reason)
	}
}

// Evicted hands the call to every open node.
func (h *sharedHub) Evicted(ev *transport.Event) {
	h.nodesMu.Lock()
	defer h.nodesMu.Unlock()
	for _, nd := range h.nodes {
		nd.sink.Evicted(ev)
	}
}

// Disconnect hands the request to every open node and returns what the
// requesting node's sink returned.
func (h *sharedHub) Disconnect(d transport.Disconnect) int {
	h.nodesMu.Lock()
	defer h.nodesMu.Unlock()
	n := 0
	for _, nd := range h.nodes {
		if c := nd.sink.Disconnect(d); nd == h.publisher {
			n = c
		}
	}
	return n
}

func (h *sharedHub) join(t *testing.T, sink transport.Sink) *sharedNode {
	nd := &sharedNode{hub: h, sink: sink, watched: make(map[string]int), patterns: make(map[string]int)}
	h.nodesMu.Lock()
	h.nodes = append(h.nodes, nd)
	h.nodesMu.Unlock()
	t.Cleanup(func() { _ = nd.Close() })
	return nd
}

// sharedNode is one node of a sharedHub.
type sharedNode struct {
	hub  *sharedHub
	sink transport.Sink

	mu       sync.Mutex
	watched  map[string]int
	patterns map[string]int
	closed   bool
}

func (n *sharedNode) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// Open implements transport.Transport; the hub is open already.
func (n *sharedNode) Open(string, transport.Limits, transport.Sink) error { return nil }

// Publish implements transport.Transport, one node at a time.
func (n *sharedNode) Publish(ctx context.Context, req transport.PublishRequest) ([]transport.Receipt, error) {
	if n.isClosed() {
		return nil, transport.ErrClosed
	}
	n.hub.pubMu.Lock()
	defer n.hub.pubMu.Unlock()
	n.hub.publisher = n
	return n.hub.tr.Publish(ctx, req)
}

// Watch implements transport.Transport; every node gets every event.
func (n *sharedNode) Watch(_ context.Context, topics []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return transport.ErrClosed
	}
	for _, name := range topics {
		n.watched[name]++
	}
	return nil
}

// Unwatch implements transport.Transport.
func (n *sharedNode) Unwatch(topics []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range topics {
		if n.watched[name]--; n.watched[name] <= 0 {
			delete(n.watched, name)
		}
	}
}

// Replay implements transport.Transport.
func (n *sharedNode) Replay(ctx context.Context, q transport.ReplayQuery) (transport.Replay, error) {
	if n.isClosed() {
		return transport.Replay{}, transport.ErrClosed
	}
	return n.hub.tr.Replay(ctx, q)
}

// SetLimits implements transport.Transport.
func (n *sharedNode) SetLimits(limits transport.Limits) { n.hub.tr.SetLimits(limits) }

// Stats implements transport.Transport, with the node's own state.
func (n *sharedNode) Stats() transport.Stats {
	st := n.hub.tr.Stats()
	n.mu.Lock()
	defer n.mu.Unlock()
	st.State.Up = !n.closed
	st.State.WatchedTopics = len(n.watched)
	st.State.WatchedPatterns = len(n.patterns)
	return st
}

// Disconnect implements transport.Transport, one node at a time.
func (n *sharedNode) Disconnect(ctx context.Context, d transport.Disconnect) (int, error) {
	if n.isClosed() {
		return 0, transport.ErrClosed
	}
	n.hub.pubMu.Lock()
	defer n.hub.pubMu.Unlock()
	n.hub.publisher = n
	return n.hub.tr.Disconnect(ctx, d)
}

// Close takes the node out of the fan-out, waiting for a delivery under
// way, and closes the memory transport with the last node.
func (n *sharedNode) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	h := n.hub
	h.nodesMu.Lock()
	for i, nd := range h.nodes {
		if nd == n {
			h.nodes = append(h.nodes[:i], h.nodes[i+1:]...)
			break
		}
	}
	last := len(h.nodes) == 0
	h.nodesMu.Unlock()
	if last {
		return h.tr.Close()
	}
	return nil
}

// TestSuiteOnSharedHub runs the suite, its cross-node cases included, on
// memory transports shared by several nodes: it checks the suite itself.
func TestSuiteOnSharedHub(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, limits transport.Limits, sink transport.Sink) transporttest.Hub {
		h := &sharedHub{tr: new(memory.Transport)}
		if err := h.tr.Open(t.Name(), limits, h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.tr.Close() })
		return transporttest.Hub{
			Transport: h.join(t, sink),
			Join: func(t *testing.T, sink transport.Sink) transport.Transport {
				return h.join(t, sink)
			},
		}
	})
}

// WatchPatterns implements transport.PatternTransport; every node gets
// every event.
func (n *sharedNode) WatchPatterns(_ context.Context, patterns []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return transport.ErrClosed
	}
	for _, p := range patterns {
		n.patterns[p]++
	}
	return nil
}

// UnwatchPatterns implements transport.PatternTransport.
func (n *sharedNode) UnwatchPatterns(patterns []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range patterns {
		if n.patterns[p]--; n.patterns[p] <= 0 {
			delete(n.patterns, p)
		}
	}
}

// ReplayPatterns implements transport.PatternTransport.
func (n *sharedNode) ReplayPatterns(ctx context.Context, q transport.PatternQuery) (transport.Replay, error) {
	if n.isClosed() {
		return transport.Replay{}, transport.ErrClosed
	}
	return n.hub.tr.ReplayPatterns(ctx, q)
}

// Interface guards
var (
	_ transport.PatternTransport = (*sharedNode)(nil)
	_ transport.Sink             = (*sharedHub)(nil)
)
