package redis

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// presenceSink is a test sink that also records presence changes.
type presenceSink struct {
	*sink
	pmu     sync.Mutex
	changes []transport.PresenceChange
	pch     chan struct{}
}

func (s *presenceSink) PresenceChanged(c transport.PresenceChange) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	s.changes = append(s.changes, c)
	close(s.pch)
	s.pch = make(chan struct{})
}

// next waits for the change after the first n, and returns it.
func (s *presenceSink) next(t testing.TB, n int) transport.PresenceChange {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.pmu.Lock()
		if len(s.changes) > n {
			c := s.changes[n]
			s.pmu.Unlock()
			return c
		}
		ch := s.pch
		s.pmu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no presence change after the first %d", n)
		}
	}
}

// presenceNode is a transport with a presenceSink, and what it was sent.
type presenceNode struct {
	*Transport
	sink *presenceSink
	seen int // changes checked so far
}

// openPresenceNode opens a node of hub h, on the Redis at addr under
// prefix, whose presence beats every beat and counts a node dead nodeTTL
// after its last beat.
func openPresenceNode(t *testing.T, addr, prefix string, beat, nodeTTL time.Duration) *presenceNode {
	t.Helper()
	tr := &Transport{Addresses: []string{addr}, Prefix: prefix}
	tr.pres.beat, tr.pres.nodeTTL = beat, nodeTTL
	s := &presenceSink{sink: newSink(), pch: make(chan struct{})}
	startTransport(t, tr, "h", defaultLimits, s, true)
	return &presenceNode{Transport: tr, sink: s}
}

// want fails unless the node's next change is c (its version aside),
// and returns its version.
func (n *presenceNode) want(t *testing.T, join bool, topic, member string) uint64 {
	t.Helper()
	c := n.sink.next(t, n.seen)
	n.seen++
	if c.Join != join || c.Topic != topic || c.Member != member {
		t.Fatalf("change %+v, want join=%v of %s on %s", c, join, member, topic)
	}
	return c.Version
}

// snapshot reads the presence of topic.
func (n *presenceNode) snapshot(t *testing.T, topic string, max int) transport.PresenceSnapshot {
	t.Helper()
	snap, err := n.Presence(context.Background(), topic, max)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestPresenceNodes: members are counted across two nodes, each change
// reaches both nodes once, in version order; a member on both nodes that
// leaves one does not leave; the snapshot's version is that of the last
// change; a topic's keys go when its last member leaves, and a node's
// when it closes.
func TestPresenceNodes(t *testing.T) {
	ssetest.RequireRedis(t, sharedRedis)
	t.Parallel()
	prefix := uniquePrefix(t, sharedRedis)
	a := openPresenceNode(t, sharedRedis, prefix, time.Second, 5*time.Second)
	b := openPresenceNode(t, sharedRedis, prefix, time.Second, 5*time.Second)

	a.Join("room", "alice")
	for _, n := range []*presenceNode{a, b} {
		if v := n.want(t, true, "room", "alice"); v != 1 {
			t.Fatalf("first change has version %d", v)
		}
	}
	b.Join("room", "bob")
	for _, n := range []*presenceNode{a, b} {
		if v := n.want(t, true, "room", "bob"); v != 2 {
			t.Fatalf("second change has version %d", v)
		}
	}
	snap := a.snapshot(t, "room", 10)
	if snap.Count != 2 || !slices.Equal(snap.Members, []string{"alice", "bob"}) || snap.Version != 2 {
		t.Fatalf("snapshot %+v, want alice and bob at version 2", snap)
	}
	if snap := b.snapshot(t, "room", 1); snap.Count != 2 || !slices.Equal(snap.Members, []string{"alice"}) {
		t.Fatalf("capped snapshot %+v, want a count of 2, alice listed", snap)
	}

	// alice on both nodes, leaving one: no change (the marker comes next)
	b.Join("room", "alice")
	b.Join("lobby", "marker") // once b has applied alice's join
	for _, n := range []*presenceNode{a, b} {
		n.want(t, true, "lobby", "marker")
	}
	a.Leave("room", "alice")
	a.Join("lobby", "marker2")
	for _, n := range []*presenceNode{a, b} {
		n.want(t, true, "lobby", "marker2")
	}
	b.Leave("room", "alice")
	for _, n := range []*presenceNode{a, b} {
		if v := n.want(t, false, "room", "alice"); v != 5 {
			t.Fatalf("alice's leave has version %d, want 5", v)
		}
	}
	counts, err := b.PresenceCounts(context.Background(), []string{"room", "lobby", "none"})
	if err != nil || !slices.Equal(counts, []int{1, 2, 0}) {
		t.Fatalf("counts %v %v, want 1 2 0", counts, err)
	}

	c := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
	defer c.Close()
	ctx := context.Background()
	base := "{" + prefix + ":h}"
	for _, k := range []string{base + ":pm:room", base + ":pn:" + a.node, base + ":pv", base + ":pnodes"} {
		if ttl := c.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no expiry (%v)", k, ttl)
		}
	}
	b.Leave("room", "bob")
	a.want(t, false, "room", "bob")
	b.want(t, false, "room", "bob")
	if n := c.Exists(ctx, base+":pm:room").Val(); n != 0 {
		t.Errorf("the hash of an empty topic is still there")
	}
	// a node that closes takes its members out: marker2 leaves
	_ = a.Close()
	b.want(t, false, "lobby", "marker2")
	if n := c.Exists(ctx, base+":pn:"+a.node).Val() + c.ZCard(ctx, base+":pnodes").Val(); n != 1 { // b is listed
		t.Errorf("the closed node is still listed, or its entries are still there")
	}
}

// TestPresenceDeadNode: the members of a node that stops beating (a
// crash: it never leaves) leave once its deadline has passed, reaped by
// another node; a node whose members are back takes them back.
func TestPresenceDeadNode(t *testing.T) {
	ssetest.RequireRedis(t, sharedRedis)
	t.Parallel()
	prefix := uniquePrefix(t, sharedRedis)
	const nodeTTL = 300 * time.Millisecond
	dead := openPresenceNode(t, sharedRedis, prefix, time.Hour, nodeTTL) // it never beats: as good as dead once listed
	live := openPresenceNode(t, sharedRedis, prefix, 50*time.Millisecond, nodeTTL)
	live.Join("room", "bob")
	live.want(t, true, "room", "bob")
	dead.Join("room", "alice")
	live.want(t, true, "room", "alice")
	joined := time.Now()
	live.want(t, false, "room", "alice")
	if d := time.Since(joined); d < nodeTTL-50*time.Millisecond {
		t.Fatalf("alice left %v after her node last showed life, before its deadline of %v", d, nodeTTL)
	}
	if snap := live.snapshot(t, "room", 10); snap.Count != 1 || !slices.Equal(snap.Members, []string{"bob"}) {
		t.Fatalf("snapshot %+v, want bob alone", snap)
	}
	// bob's node goes on beating: bob stays
	time.Sleep(2 * nodeTTL)
	if snap := live.snapshot(t, "room", 10); snap.Count != 1 {
		t.Fatalf("snapshot %+v, want bob still there", snap)
	}
	// the reaped node learns it was reaped at its next script, and sets
	// its members again
	dead.Join("lobby", "carol")
	live.want(t, true, "lobby", "carol")
	dead.presenceBeat()
	live.want(t, true, "room", "alice")
}

// TestPresenceScriptsInSlot: every presence key of a hub carries its hash
// tag.
func TestPresenceScriptsInSlot(t *testing.T) {
	ssetest.RequireRedis(t, sharedRedis)
	t.Parallel()
	prefix := uniquePrefix(t, sharedRedis)
	a := openPresenceNode(t, sharedRedis, prefix, 50*time.Millisecond, time.Second)
	a.Join("x/y", "m")
	a.want(t, true, "x/y", "m")
	a.presenceBeat()
	c := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
	defer c.Close()
	keys, _, err := c.Scan(context.Background(), 0, "*"+prefix+"*", 10000).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "{"+prefix+":h}:") {
			t.Errorf("key %q is outside the hub's hash tag", k)
		}
	}
}

// TestPresenceRedisLost: a Redis that restarts empty (no persistence)
// loses every member; each node sets its own again at its next beat,
// so that the members come back, with their joins (and the versions
// start again at 1: the hubs' watchers see that as a gap and reconnect).
func TestPresenceRedisLost(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openPresenceNode(t, srv.Addr, "p", 50*time.Millisecond, 5*time.Second)
	a.Join("room", "alice")
	a.want(t, true, "room", "alice")
	srv.kill()
	srv.start()
	b := openPresenceNode(t, srv.Addr, "p", time.Hour, 5*time.Second)
	eventually(t, "alice is back", func() bool {
		snap, err := b.Presence(context.Background(), "room", 10)
		return err == nil && snap.Count == 1 && slices.Equal(snap.Members, []string{"alice"})
	})
	// her join was published again (a watcher that connected before it
	// sees her come back; a's own reader, reconnected, may or may not)
	if v := b.snapshot(t, "room", 0).Version; v != 1 {
		t.Fatalf("version %d after the restart, want 1: alice's join again", v)
	}
}
