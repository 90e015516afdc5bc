package transporttest

import (
	"slices"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// testDisconnect: Disconnect hands the request to this node's sink once,
// before it returns, and returns what the sink returned.
func testDisconnect(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	reqs := []transport.Disconnect{{Topic: "a/*"}, {Subject: "alice"}}
	for i, d := range reqs {
		e.rec.SetDisconnected(3 + i)
		n, err := e.tr.Disconnect(ctx(t), d)
		if err != nil {
			t.Fatalf("Disconnect(%+v): %v", d, err)
		}
		if n != 3+i {
			t.Errorf("Disconnect(%+v) returned %d, want the sink's %d", d, n, 3+i)
		}
		wantDisconnects(t, "when Disconnect returned", e.rec.Disconnects(), reqs[:i+1]...)
	}
	// A request that came back to its own node would come before an event
	// published after it.
	r := e.publish("a")
	e.rec.AwaitSeq(t, seqOf(t, r))
	wantDisconnects(t, "once an event published later was delivered", e.rec.Disconnects(), reqs...)
}

// testNodesDisconnect: a request made on one node reaches the sink of
// every node once: its own before Disconnect returns, the others' soon
// after; the count returned is the requesting node's.
func testNodesDisconnect(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	b := e.join("a")
	e.rec.SetDisconnected(2)
	b.rec.SetDisconnected(7)
	first := transport.Disconnect{Subject: "alice"}
	if n, err := e.tr.Disconnect(ctx(t), first); err != nil || n != 2 {
		t.Fatalf("Disconnect on node 0: %d, %v; want node 0's count 2, nil", n, err)
	}
	wantDisconnects(t, "node 0, when Disconnect returned", e.rec.Disconnects(), first)
	wantDisconnects(t, "node 1", b.rec.AwaitDisconnects(t, 1), first)
	// A request delivered twice would come before an event published after
	// it, on every node.
	r := e.publish("a")
	e.rec.AwaitSeq(t, seqOf(t, r))
	b.rec.AwaitSeq(t, seqOf(t, r))
	wantDisconnects(t, "node 0, once a later event was delivered", e.rec.Disconnects(), first)
	wantDisconnects(t, "node 1, once a later event was delivered", b.rec.Disconnects(), first)

	second := transport.Disconnect{Topic: "a"}
	if n, err := b.tr.Disconnect(ctx(t), second); err != nil || n != 7 {
		t.Fatalf("Disconnect on node 1: %d, %v; want node 1's count 7, nil", n, err)
	}
	wantDisconnects(t, "node 1, when Disconnect returned", b.rec.Disconnects(), first, second)
	wantDisconnects(t, "node 0", e.rec.AwaitDisconnects(t, 2), first, second)
	r = b.publish("a")
	e.rec.AwaitSeq(t, seqOf(t, r))
	b.rec.AwaitSeq(t, seqOf(t, r))
	wantDisconnects(t, "node 0, once a later event was delivered", e.rec.Disconnects(), first, second)
	wantDisconnects(t, "node 1, once a later event was delivered", b.rec.Disconnects(), first, second)
}

// wantDisconnects fails t unless got are the requests want, in order.
func wantDisconnects(t *testing.T, what string, got []transport.Disconnect, want ...transport.Disconnect) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: the sink got the disconnect requests %+v, want %+v", what, got, want)
	}
}
