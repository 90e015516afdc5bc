package redis

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// awaitDisconnects waits until the sink got n disconnect requests and
// returns them.
func (s *sink) awaitDisconnects(t testing.TB, n int) []transport.Disconnect {
	t.Helper()
	s.await(t, fmt.Sprint(n, " disconnect requests"), func([]*transport.Event, []interruption) bool {
		return len(s.disconns) >= n // await holds s.mu
	})
	return s.disconnects()
}

// disconnects returns the disconnect requests the sink got so far.
func (s *sink) disconnects() []transport.Disconnect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.disconns)
}

// wantDisconnects fails t unless the sink got exactly the requests want.
func (s *sink) wantDisconnects(t testing.TB, what string, want ...transport.Disconnect) {
	t.Helper()
	if got := s.disconnects(); !slices.Equal(got, want) {
		t.Fatalf("%s: disconnect requests %+v, want %+v", what, got, want)
	}
}

// sendRaw publishes payload on n's control channel, as another node
// would.
func (n *node) sendRaw(t testing.TB, payload string) {
	t.Helper()
	ctx := context.Background()
	var err error
	if n.sharded.Load() == 1 {
		err = n.client.SPublish(ctx, n.controlChannel(), payload).Err()
	} else {
		err = n.client.Publish(ctx, n.controlChannel(), payload).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestDisconnectClassicPubSub: with classic Pub/Sub (Redis before 7),
// a disconnect request reaches the other node once, and its own once.
func TestDisconnectClassicPubSub(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	classic := func(tr *Transport) { tr.sharded.Store(2) }
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits, classic)
	b := openNode(t, sharedRedis, prefix, "h", defaultLimits, classic)
	a.watch(t, "t")
	b.watch(t, "t")
	d := transport.Disconnect{Topic: "t"}
	if _, err := a.Disconnect(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b.sink.awaitDisconnects(t, 1)
	r := a.publish(t, "later", "t")
	a.sink.awaitSeq(t, seqOf(t, r.ID))
	b.sink.awaitSeq(t, seqOf(t, r.ID))
	a.sink.wantDisconnects(t, "node a", d)
	b.sink.wantDisconnects(t, "node b", d)
}

// TestControlMessagesOthersIgnored: a node ignores a malformed control
// message, one of a kind it does not know, a disconnect without its
// request, and its own; it acts on another node's disconnect.
func TestControlMessagesOthersIgnored(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	a := openNode(t, sharedRedis, prefix, "h", defaultLimits)
	a.watch(t, "t")
	for _, p := range []string{
		`not json`,
		`{"kind":"future","node":"other","disconnect":{"topic":"t"}}`,
		`{"kind":"disconnect","node":"other"}`,
		`{"kind":"disconnect","node":"` + a.node + `","disconnect":{"topic":"t"}}`,
		`{"kind":"disconnect","node":"other","disconnect":{"subject":"s"},"extra":1}`,
	} {
		a.sendRaw(t, p)
	}
	a.sink.awaitDisconnects(t, 1)
	r := a.publish(t, "later", "t")
	a.sink.awaitSeq(t, seqOf(t, r.ID))
	a.sink.wantDisconnects(t, "node a", transport.Disconnect{Subject: "s"})
}
