package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// pubsubConnections counts the connections of the node's client named
// name on srv, and those subscribed to channels.
func pubsubConnections(t testing.TB, srv *privateRedis, name string) (clients, pubsub int) {
	t.Helper()
	list, err := srv.client().ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return countClients(list, name)
}

// openHubs opens n hubs h0... of prefix on srv, as one node's config.
func openHubs(t testing.TB, srv *privateRedis, prefix string, n int, opts ...func(*Transport)) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = openNode(t, srv.Addr, prefix, fmt.Sprint("h", i), defaultLimits, opts...)
	}
	return nodes
}

// TestOnePubSubConnection: 20 hubs of a node read their channels over one
// Pub/Sub connection, and each delivers its own events only, though their
// topics have the same names. During a reload, a hub's old and new
// transports both read its channels; the old one closing leaves them
// subscribed for the new one.
func TestOnePubSubConnection(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	hubs := openHubs(t, srv, "p", 20)
	for _, h := range hubs {
		h.watch(t, "t", "own-"+h.hub)
	}
	if _, pubsub := pubsubConnections(t, srv, hubs[0].clientName()); pubsub != 1 {
		t.Fatalf("20 hubs use %d Pub/Sub connections, want 1", pubsub)
	}
	for round := range 3 {
		for _, h := range hubs {
			h.publish(t, fmt.Sprint(h.hub, "/", round), "t")
		}
	}
	for _, h := range hubs {
		h.publish(t, h.hub+"/own", "own-"+h.hub)
	}
	for _, h := range hubs {
		h.sink.awaitSeq(t, 4)
		h.sink.checkSeqs(t, seqRange(1, 4))
		h.sink.mu.Lock()
		for _, ev := range h.sink.events {
			if !strings.Contains(string(ev.Wire), "data: "+h.hub+"/") {
				t.Errorf("hub %s delivered %q", h.hub, ev.Wire)
			}
		}
		h.sink.mu.Unlock()
	}

	// a reload re-creates h0: both transports read its channels
	old := hubs[0]
	renewed := openNode(t, srv.Addr, "p", old.hub, defaultLimits)
	renewed.watch(t, "t")
	r := old.publish(t, "both", "t")
	old.sink.awaitSeq(t, seqOf(t, r.ID))
	renewed.sink.awaitSeq(t, seqOf(t, r.ID))
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	r = renewed.publish(t, "after the reload", "t")
	renewed.sink.awaitSeq(t, seqOf(t, r.ID))
	if n, err := srv.client().PubSubShardNumSub(context.Background(), renewed.channel("t")).Result(); err != nil || n[renewed.channel("t")] != 1 {
		t.Fatalf("subscribers of h0's channel after the old transport closed: %v (%v)", n, err)
	}
	if _, pubsub := pubsubConnections(t, srv, renewed.clientName()); pubsub != 1 {
		t.Fatalf("after the reload: %d Pub/Sub connections, want 1", pubsub)
	}
}

// TestSharedConnectionKilled: killing the node's one Pub/Sub connection
// makes every hub on it re-read what it missed, once the connection is
// back: each delivers every event once, in order, and counts one
// resynchronisation.
func TestSharedConnectionKilled(t *testing.T) {
	srv := startPrivateRedis(t)
	subs := openHubs(t, srv, "p", 20, withTimeout(faultTimeout), slowReconnect)
	// another node (other options: a client of its own) publishes
	pubs := openHubs(t, srv, "p", 20, withTimeout(2*faultTimeout))
	for _, s := range subs {
		s.watch(t, "t")
	}
	for i, p := range pubs {
		p.publishN(t, 2, "t")
		subs[i].sink.awaitSeq(t, 2)
	}
	if err := srv.client().Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// published while the subscribers reconnect (they wait a while first)
	for _, p := range pubs {
		p.publishN(t, 5, "t")
	}
	for _, s := range subs {
		s.sink.awaitSeq(t, 7)
		s.sink.checkSeqs(t, seqRange(1, 7))
		eventually(t, "hub "+s.hub+" up", func() bool { return s.Stats().State.Up })
		if st := s.Stats().State; st.Resyncs["reconnect"] != 1 {
			t.Fatalf("hub %s: resyncs %v, want one reconnect", s.hub, st.Resyncs)
		}
		s.sink.mu.Lock()
		ints := len(s.sink.interrupts)
		s.sink.mu.Unlock()
		if ints != 0 {
			t.Fatalf("hub %s: %d interrupts", s.hub, ints)
		}
	}
	if _, pubsub := pubsubConnections(t, srv, subs[0].clientName()); pubsub != 1 {
		t.Fatalf("after the reconnection: %d Pub/Sub connections, want 1", pubsub)
	}
}

// gatedSink is a sink whose Deliver waits until gate is closed: a hub
// slow to deliver.
type gatedSink struct {
	*sink
	gate chan struct{}
}

func (s gatedSink) Deliver(ev *transport.Event) int {
	<-s.gate
	return s.sink.Deliver(ev)
}

// TestSlowHub: a hub that is slow to deliver does not hold up the other
// hubs on the Pub/Sub connection, and delivers its own events in order
// once it goes on.
func TestSlowHub(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	gate := make(chan struct{})
	slow := &node{Transport: &Transport{Addresses: []string{srv.Addr}, Prefix: "p"}, sink: newSink()}
	if err := slow.Open("slow", defaultLimits, gatedSink{slow.sink, gate}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	fast := openNode(t, srv.Addr, "p", "fast", defaultLimits)
	slow.watch(t, "t")
	fast.watch(t, "t")
	// another node publishes (the hubs' own publishes would wait for
	// their delivery)
	other := withTimeout(3 * time.Second)
	openNode(t, srv.Addr, "p", "slow", defaultLimits, other).publishN(t, 50, "t")
	openNode(t, srv.Addr, "p", "fast", defaultLimits, other).publishN(t, 50, "t")
	fast.sink.awaitSeq(t, 50) // while the slow hub is stuck on its first event
	close(gate)
	slow.sink.awaitSeq(t, 50)
	slow.sink.checkSeqs(t, seqRange(1, 50))
	fast.sink.checkSeqs(t, seqRange(1, 50))
}

// TestSubscriptionRefused: a hub whose channels Redis stops allowing
// (an ACL change, which also cuts the connection) is down, saying why;
// the other hubs on the connection are back up.
func TestSubscriptionRefused(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	ctl := srv.client()
	ctx := context.Background()
	setUser := func(channels ...string) {
		args := []any{"ACL", "SETUSER", "u", "on", ">pw", "~*", "resetchannels", "+@all"}
		for _, c := range channels {
			args = append(args, c)
		}
		if err := ctl.Do(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	setUser("&{a:*", "&{b:*")
	user := func(tr *Transport) { tr.Username, tr.Password, tr.Timeout = "u", "pw", 0 }
	a := openNode(t, srv.Addr, "a", "h", defaultLimits, user)
	b := openNode(t, srv.Addr, "b", "h", defaultLimits, user)
	a.watch(t, "t")
	b.watch(t, "t")
	setUser("&{a:*") // b's channels no longer: Redis cuts the connection
	eventually(t, "b down, refused", func() bool {
		st := b.Stats().State
		return !st.Up && strings.Contains(st.LastError, "NOPERM")
	})
	eventually(t, "a up again", func() bool { return a.Stats().State.Up })
	r := a.publish(t, "after", "t")
	a.sink.awaitSeq(t, seqOf(t, r.ID))
	if _, pubsub := pubsubConnections(t, srv, a.clientName()); pubsub != 1 {
		t.Fatalf("%d Pub/Sub connections, want 1", pubsub)
	}
}
