package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ssehub/caddy-sse/transport"
)

// Fault tests run against private redis-server processes, never the shared
// one: they kill, pause, flush and restart them.

const faultTimeout = 300 * time.Millisecond

// slowReconnect makes a node wait half a second before it reconnects, so
// that what a test publishes meanwhile is surely missed live.
func slowReconnect(t *Transport) { t.retryAfter = 500 * time.Millisecond }

func withTimeout(d time.Duration) func(*Transport) {
	return func(t *Transport) { t.Timeout = caddy.Duration(d) }
}

// publishN publishes n events to topic and returns their seqs.
func (n *node) publishN(t testing.TB, count int, topic string) []uint64 {
	t.Helper()
	var out []uint64
	for i := range count {
		out = append(out, seqOf(t, n.publish(t, fmt.Sprint(i), topic).ID))
	}
	return out
}

// awaitSeq waits until the sink delivered seq.
func (s *sink) awaitSeq(t testing.TB, seq uint64) {
	t.Helper()
	s.await(t, fmt.Sprint("event ", seq), func(evs []*transport.Event, _ []interruption) bool {
		return len(evs) > 0 && evs[len(evs)-1].Seq >= seq
	})
}

// checkOrder fails unless the sink's seqs are exactly want.
func (s *sink) checkSeqs(t testing.TB, want []uint64) {
	t.Helper()
	if got := s.seqs(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestPubSubConnectionKilled: while a node's Pub/Sub connection is down,
// events published by another node are read from the history once it is
// back, and delivered in order, once.
func TestPubSubConnectionKilled(t *testing.T) {
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout), slowReconnect)
	b := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	a.watch(t, "t")
	b.publishN(t, 5, "t")
	a.sink.awaitSeq(t, 5)
	for round := range 3 {
		if err := srv.client().Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		// published while a reconnects (it waits a while first)
		last := b.publishN(t, 20, "t")
		a.sink.awaitSeq(t, last[len(last)-1])
		a.sink.checkSeqs(t, seqRange(1, last[len(last)-1]))
		if st := a.Stats().State; st.Resyncs["reconnect"] != uint64(round+1) {
			t.Fatalf("round %d: resyncs %v", round, st.Resyncs)
		}
	}
	if len(a.sink.interrupts) != 0 {
		t.Fatalf("interrupts %v", a.sink.interrupts)
	}
}

// TestMissedEventsEvicted: events missed while disconnected that the
// history no longer holds end the streams of their topic; other topics
// go on.
func TestMissedEventsEvicted(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	limits := transport.Limits{Events: 3, MaxBytes: 1 << 30}
	a := openNode(t, srv.Addr, "p", "h", limits, withTimeout(faultTimeout), slowReconnect)
	b := openNode(t, srv.Addr, "p", "h", limits, withTimeout(faultTimeout))
	a.watch(t, "lossy", "fine")
	b.publish(t, "0", "lossy")
	a.sink.awaitSeq(t, 1)
	if err := srv.client().Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	b.publishN(t, 5, "lossy") // 2..6: 2 and 3 are evicted
	f := seqOf(t, b.publish(t, "f", "fine").ID)
	a.sink.awaitSeq(t, f)
	a.sink.mu.Lock()
	ints := slices.Clone(a.sink.interrupts)
	a.sink.mu.Unlock()
	if len(ints) != 1 || !slices.Equal(ints[0].topics, []string{"lossy"}) || ints[0].reason != "gap" {
		t.Fatalf("interrupts %v", ints)
	}
	// the fine topic got its event; lossy's retained events went to the
	// sink after the interruption only if another topic needed them: here none
	a.sink.checkSeqs(t, []uint64{1, f})
	// and live events of lossy go on after
	g := seqOf(t, b.publish(t, "g", "lossy").ID)
	a.sink.awaitSeq(t, g)
}

// TestOutage: with Redis gone, publishes fail with ErrUnavailable within
// the timeout, new subscriptions are refused, a disconnect request ends
// the local streams but reports that the other nodes were not told, the
// state says so; when a Redis with the same data returns, everything goes
// on with nothing lost.
func TestOutage(t *testing.T) {
	srv := startPrivateRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	a.watch(t, "t")
	a.publishN(t, 3, "t")
	a.sink.awaitSeq(t, 3)
	epoch := a.Stats().Epoch

	srv.kill()
	start := time.Now()
	_, err := a.Publish(context.Background(), transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"t"}, Data: "x", Retry: -1}}})
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("publish during the outage: %v", err)
	}
	if d := time.Since(start); d > faultTimeout+200*time.Millisecond {
		t.Fatalf("publish took %v to fail, timeout %v", d, faultTimeout)
	}
	eventually(t, "the state shows the outage", func() bool { return !a.Stats().State.Up })
	if err := a.Watch(context.Background(), []string{"new"}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("watch during the outage: %v", err)
	}
	if _, err := a.Replay(context.Background(), transport.ReplayQuery{Topics: []string{"t"}}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("replay during the outage: %v", err)
	}
	if st := a.Stats(); st.State.LastError == "" || st.Head != 3 {
		t.Fatalf("stats during the outage: %+v", st)
	}
	d := transport.Disconnect{Subject: "s"}
	if _, err := a.Disconnect(context.Background(), d); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("disconnect during the outage: %v, want ErrUnavailable", err)
	}
	a.sink.wantDisconnects(t, "the local streams during the outage", d)

	srv.start() // the same data, from its append-only file
	eventually(t, "the transport is up again", func() bool { return a.Stats().State.Up })
	if st := a.Stats().State; st.LastError != "" {
		t.Fatalf("state after the outage: %+v, want no last_error once up again", st)
	}
	a.watch(t, "new")
	r := a.publish(t, "after", "t")
	a.sink.awaitSeq(t, 4)
	if seqOf(t, r.ID) != 4 || a.Stats().Epoch != epoch {
		t.Fatalf("after the outage: %s in epoch %s, want seq 4 in %s", r.ID, a.Stats().Epoch, epoch)
	}
	a.sink.checkSeqs(t, []uint64{1, 2, 3, 4})
	if len(a.sink.interrupts) != 0 {
		t.Fatalf("interrupts %v", a.sink.interrupts)
	}
}

// TestHistoryLost: Redis restarted without persistence, or flushed: a new
// epoch, every stream interrupted, old ids reset.
func TestHistoryLost(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"restart", "flushall"} {
		t.Run(how, func(t *testing.T) {
			srv := startPrivateRedis(t)
			a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
			a.watch(t, "t")
			old := a.publish(t, "before", "t")
			a.sink.awaitSeq(t, 1)
			if how == "restart" {
				srv.kill()
				srv.start()
			} else if err := srv.client().FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			a.sink.await(t, "the epoch interruption", func(_ []*transport.Event, ints []interruption) bool {
				return len(ints) == 1 && ints[0].topics == nil && ints[0].reason == "epoch"
			})
			if st := a.Stats(); st.Epoch == "" || st.Epoch+"-1" == old.ID || st.State.Resyncs["epoch"] != 1 {
				t.Fatalf("after: %+v", st)
			}
			r := a.replay(t, transport.ReplayQuery{Topics: []string{"t"}, Resume: true, LastEventID: old.ID})
			if !r.Reset {
				t.Fatal("an id of the lost history resumed")
			}
			a.watch(t, "t")
			n := a.publish(t, "new", "t")
			if seqOf(t, n.ID) != 1 {
				t.Fatalf("first id of the new epoch: %s", n.ID)
			}
			a.sink.await(t, "the new epoch's event", func(evs []*transport.Event, _ []interruption) bool {
				return evs[len(evs)-1].ID == n.ID
			})
		})
	}
}

// TestRollback: Redis restarted from an older snapshot (as after a
// failover that lost the newest writes): its seq is below what the node
// delivered, so a new epoch starts rather than giving ids twice.
func TestRollback(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	a.watch(t, "t")
	a.publishN(t, 3, "t")
	if err := srv.client().Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	a.publishN(t, 3, "t")
	a.sink.awaitSeq(t, 6)
	epoch := a.Stats().Epoch
	srv.kill()
	srv.start() // from the snapshot: seq 3
	a.sink.await(t, "the epoch interruption", func(_ []*transport.Event, ints []interruption) bool {
		return len(ints) == 1 && ints[0].reason == "epoch"
	})
	if st := a.Stats(); st.Epoch == epoch {
		t.Fatalf("still epoch %s after the rollback", epoch)
	}
	if n := a.publish(t, "x", "t"); seqOf(t, n.ID) != 1 {
		t.Fatalf("first id after the rollback: %s", n.ID)
	}
}

// TestLostReply: a publish whose answer does not come in time is answered
// with ErrUnavailable though Redis stored it; it is not sent again, and a
// retry with the same idempotency key gets the stored receipt.
func TestLostReply(t *testing.T) {
	srv := startPrivateRedis(t, "--enable-debug-command", "yes")
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	ctl := srv.client()
	req := transport.PublishRequest{
		Messages: []transport.Message{{Topics: []string{"t"}, Data: "once", Retry: -1}},
		Key:      "k", Fingerprint: "f",
	}
	// Redis busy for four times the timeout: the publish is read and run
	// once it wakes, after the publisher gave up on the answer.
	// (A first publish leaves the publisher a connection ready to send on.)
	a.publish(t, "first", "other")
	probe := goredis.NewClient(&goredis.Options{Addr: srv.Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	defer probe.Close()
	slept := make(chan error, 1)
	go func() { slept <- ctl.Do(context.Background(), "DEBUG", "SLEEP", (4 * faultTimeout).Seconds()).Err() }()
	eventually(t, "redis asleep", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		return probe.Ping(ctx).Err() != nil
	})
	if _, err := a.Publish(context.Background(), req); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("publish while Redis is busy: %v", err)
	}
	if err := <-slept; err != nil {
		t.Fatal(err)
	}
	// Redis ran the script once the pause ended
	eventually(t, "the paused publish stored", func() bool {
		v, _ := ctl.HGet(context.Background(), "{p:h}:meta", "seq").Result()
		return v == "2"
	})
	rs, err := a.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !rs[0].Repeated || seqOf(t, rs[0].ID) != 2 {
		t.Fatalf("retry: %+v", rs[0])
	}
	time.Sleep(faultTimeout) // nothing else may arrive late
	if st := a.Stats(); st.Head != 2 || st.Events != 2 {
		t.Fatalf("stored %d events, head %d", st.Events, st.Head)
	}
}

// TestPaused: a Redis that stops answering (CLIENT PAUSE) makes the node
// unavailable (its PING goes unanswered), and then available again.
func TestPaused(t *testing.T) {
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	b := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	a.watch(t, "t")
	b.publishN(t, 2, "t")
	a.sink.awaitSeq(t, 2)
	if err := srv.client().Do(context.Background(), "CLIENT", "PAUSE", 3000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the node sees Redis hang", func() bool { return !a.Stats().State.Up })
	eventually(t, "the node is back", func() bool { return a.Stats().State.Up })
	last := b.publishN(t, 3, "t")
	a.sink.awaitSeq(t, last[2])
	a.sink.checkSeqs(t, seqRange(1, 5))
}

// dropProxy forwards TCP connections to a Redis server; once armed, it
// drops the first answer that contains a marker, closing that connection
// after Redis ran the command: a reply lost with the connection.
type dropProxy struct {
	Addr    string
	target  string
	marker  []byte
	armed   atomic.Bool
	dropped atomic.Int32
	delay   atomic.Int64 // holds what clients send this long (ns) before passing it on
	l       net.Listener

	heldMu sync.Mutex
	held   []string // what was held by delay, in lower case
}

// holding reports whether the proxy held, or holds, a write of clients
// that contains s (in lower case).
func (p *dropProxy) holding(s string) bool {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	return slices.ContainsFunc(p.held, func(h string) bool { return strings.Contains(h, s) })
}

func startDropProxy(t *testing.T, target, marker string) *dropProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{Addr: l.Addr().String(), target: target, marker: []byte(marker), l: l}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.serve(c)
			}()
		}
	}()
	return p
}

func (p *dropProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() {
		defer s.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if d := time.Duration(p.delay.Load()); d > 0 {
					p.heldMu.Lock()
					p.held = append(p.held, strings.ToLower(string(buf[:n])))
					p.heldMu.Unlock()
					time.Sleep(d) // the behaviour under test: a slow way to Redis
				}
				if _, werr := s.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if bytes.Contains(buf[:n], p.marker) && p.armed.CompareAndSwap(true, false) {
				p.dropped.Add(1)
				return // the reply is lost with the connection
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestReplyLostWithConnection: a publish whose connection breaks after
// Redis ran it is not sent again (go-redis retries are off): it is stored
// once, and the publisher's retry with its idempotency key is answered
// with the stored receipt.
func TestReplyLostWithConnection(t *testing.T) {
	srv := startPrivateRedis(t)
	proxy := startDropProxy(t, srv.Addr, "$2\r\nok\r\n")
	a := openNode(t, proxy.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	req := transport.PublishRequest{
		Messages: []transport.Message{{Topics: []string{"t"}, Data: "once", Retry: -1}},
		Key:      "k", Fingerprint: "f",
	}
	proxy.armed.Store(true)
	if _, err := a.Publish(context.Background(), req); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("publish whose reply was lost: %v", err)
	}
	if proxy.dropped.Load() != 1 {
		t.Fatal("the proxy dropped no reply")
	}
	if v, _ := srv.client().HGet(context.Background(), "{p:h}:meta", "seq").Result(); v != "1" {
		t.Fatalf("redis's seq after one publish whose reply was lost: %q", v)
	}
	rs, err := a.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !rs[0].Repeated || seqOf(t, rs[0].ID) != 1 {
		t.Fatalf("retry: %+v", rs[0])
	}
	if st := a.Stats(); st.Head != 1 || st.Events != 1 {
		t.Fatalf("stored %d events, head %d", st.Events, st.Head)
	}
}

// TestOpen: a hub whose Redis is not there yet opens, unavailable, and
// serves once Redis answers; wrong credentials are an error at once.
func TestOpen(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t, "--requirepass", "right")
	tr := &Transport{Addresses: []string{srv.Addr}, Password: "wrong", Timeout: caddy.Duration(faultTimeout)}
	err := tr.Open("h", defaultLimits, newSink())
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		_ = tr.Close()
		t.Fatalf("open with a wrong password: %v", err)
	}

	srv.kill()
	a := openDownNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout), func(tr *Transport) { tr.Password = "right" })
	if st := a.Stats().State; st.Up || st.LastError == "" {
		t.Fatalf("state without redis: %+v", st)
	}
	if err := a.Watch(context.Background(), []string{"t"}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("watch without redis: %v", err)
	}
	srv.start()
	eventually(t, "the transport is up", func() bool { return a.Stats().State.Up })
	a.watch(t, "t")
	a.publish(t, "x", "t")
	a.sink.awaitSeq(t, 1)
}

// TestEvictionWarning: a Redis that may evict keys is warned about when
// the hub opens; one that may not is not.
func TestEvictionWarning(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"allkeys-lru", "noeviction"} {
		srv := startPrivateRedis(t, "--maxmemory-policy", policy)
		core, logs := observer.New(zap.WarnLevel)
		openNode(t, srv.Addr, "p", "h", defaultLimits, func(tr *Transport) { tr.logger = zap.New(core) })
		warned := logs.FilterMessageSnippet("maxmemory-policy").Len() == 1
		if warned != (policy != "noeviction") {
			t.Errorf("policy %s: warned %v: %v", policy, warned, logs.All())
		}
	}
}

// TestWatchAwaitsConfirmation: Watch returns only once Redis has the
// subscription, so that an event published right after it (by a node
// that reaches Redis faster) is delivered.
func TestWatchAwaitsConfirmation(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	proxy := startDropProxy(t, srv.Addr, "\x00never")
	a := openNode(t, proxy.Addr, "p", "h", defaultLimits, withTimeout(2*time.Second))
	b := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(2*time.Second))
	const delay = 300 * time.Millisecond
	proxy.delay.Store(int64(delay))
	start := time.Now()
	a.watch(t, "x")
	if d := time.Since(start); d < delay {
		t.Fatalf("Watch returned after %v, before its subscription reached Redis (%v on the way)", d, delay)
	}
	proxy.delay.Store(0)
	r := b.publish(t, "right after", "x")
	a.sink.awaitSeq(t, seqOf(t, r.ID))
}

// TestCluster: a hub on a three-shard Redis Cluster: its keys and channels
// share one slot, two nodes deliver each event once, in order, a
// resumption works, and a disconnect request reaches the other node.
func TestCluster(t *testing.T) {
	t.Parallel()
	var srvs []*privateRedis
	var addrs []string
	for range 3 {
		srv := startPrivateRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		srvs = append(srvs, srv)
		addrs = append(addrs, srv.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, srv := range srvs {
		eventually(t, "the cluster is ok on "+srv.Addr, func() bool {
			info, err := srv.client().ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
	}
	cluster := func(tr *Transport) { tr.Addresses = addrs }
	a := openNode(t, "", "p", "h", defaultLimits, cluster)
	b := openNode(t, "", "p", "h", defaultLimits, cluster)
	a.watch(t, "x", "y")
	var ids []string
	for i := range 20 {
		n := []*node{a, b}[i%2]
		ids = append(ids, n.publish(t, fmt.Sprint(i), []string{"x", "y"}[i%2]).ID)
	}
	a.sink.awaitSeq(t, 20)
	a.sink.checkSeqs(t, seqRange(1, 20))
	d := transport.Disconnect{Topic: "x"}
	if _, err := b.Disconnect(context.Background(), d); err != nil {
		t.Fatalf("disconnect on the cluster: %v", err)
	}
	a.sink.awaitDisconnects(t, 1)
	a.sink.wantDisconnects(t, "node a, on the cluster", d)
	r := b.replay(t, transport.ReplayQuery{Topics: []string{"x"}, Resume: true, LastEventID: ids[9]})
	if r.Reset || !slices.Equal(eventSeqs(r.Events), []uint64{11, 13, 15, 17, 19}) {
		t.Fatalf("resume on the cluster: reset %v, %v", r.Reset, eventSeqs(r.Events))
	}
	// every key of the hub is on one shard
	holders := 0
	for _, srv := range srvs {
		if n, _ := srv.client().DBSize(context.Background()).Result(); n > 0 {
			holders++
		}
	}
	if holders != 1 {
		t.Fatalf("the hub's keys are on %d shards", holders)
	}
}

// TestOrderCheckStartsAtConfirmation: a topic's events published before
// Redis confirmed the subscription of its channel are not all seen: its
// events of several topics come on the hub's channel, which the node
// always reads, and its events alone do not. Watch returns at the
// confirmation, so no stream of the watch was promised them (its replay
// has them), and the order check must not take the loss for a gap: it
// starts at the confirmation. Two ways to get there: a new watch, whose
// subscription is on its way while events of several topics come; and a
// topic watched again while the unsubscription of its idle channel is on
// its way, the old subscription delivering an event first.
func TestOrderCheckStartsAtConfirmation(t *testing.T) {
	t.Parallel()
	t.Run("new watch", func(t *testing.T) {
		t.Parallel()
		a, b, proxy := slowSubscriber(t)
		ctx := context.Background()
		proxy.delay.Store(int64(time.Second))
		watched := make(chan error, 1)
		go func() { watched <- a.Watch(ctx, []string{"a"}) }()
		eventually(t, "the proxy to hold the subscription", func() bool { return proxy.holding("ssubscribe") })
		a.sink.awaitSeq(t, seqOf(t, b.publish(t, "m1, on the hub's channel", "a", "b").ID))
		b.publish(t, "x, lost: not subscribed yet", "a")
		last := b.publish(t, "m2, on the hub's channel", "a", "b")
		a.sink.awaitSeq(t, seqOf(t, last.ID))
		if err := <-watched; err != nil {
			t.Fatalf("watch: %v", err)
		}
		noInterrupts(t, a)
	})
	t.Run("watched again while unsubscribing", func(t *testing.T) {
		t.Parallel()
		a, b, proxy := slowSubscriber(t)
		ctx := context.Background()
		a.watch(t, "a")
		a.sink.awaitSeq(t, seqOf(t, b.publish(t, "x0", "a").ID))
		a.Unwatch([]string{"a"})
		// the unsubscription, then the new subscription, each a second
		// on its way to Redis
		proxy.delay.Store(int64(time.Second))
		a.rd.unsubscribeIdle(ctx, 0)
		eventually(t, "the proxy to hold the unsubscription", func() bool { return proxy.holding("sunsubscribe") })
		watched := make(chan error, 1)
		go func() { watched <- a.Watch(ctx, []string{"a"}) }()
		eventually(t, "the new watch", func() bool {
			a.rd.mu.Lock()
			defer a.rd.mu.Unlock()
			return a.rd.topics["a"] != nil
		})
		a.sink.awaitSeq(t, seqOf(t, b.publish(t, "x1, through the old subscription", "a").ID))
		direct := goredis.NewClient(&goredis.Options{Addr: b.Addresses[0]})
		defer direct.Close()
		eventually(t, "the unsubscription to reach redis", func() bool {
			n, err := direct.PubSubShardNumSub(ctx, a.channel("a")).Result()
			return err == nil && n[a.channel("a")] == 0
		})
		b.publish(t, "x2, lost: no subscription", "a")
		last := b.publish(t, "m, on the hub's channel", "a", "b")
		if err := <-watched; err != nil {
			t.Fatalf("watch: %v", err)
		}
		a.sink.awaitSeq(t, seqOf(t, last.ID))
		noInterrupts(t, a)
	})
}

// slowSubscriber opens two nodes on a private Redis: a, whose way to Redis
// goes through proxy (see its delay), and b.
func slowSubscriber(t *testing.T) (a, b *node, proxy *dropProxy) {
	srv := startPrivateRedis(t)
	proxy = startDropProxy(t, srv.Addr, "\x00never")
	a = openNode(t, proxy.Addr, "p", "h", defaultLimits, withTimeout(5*time.Second))
	b = openNode(t, srv.Addr, "p", "h", defaultLimits)
	return a, b, proxy
}

// noInterrupts fails the test if n's streams were interrupted.
func noInterrupts(t *testing.T, n *node) {
	t.Helper()
	n.sink.mu.Lock()
	defer n.sink.mu.Unlock()
	if len(n.sink.interrupts) != 0 {
		t.Fatalf("a loss before the subscription was confirmed was taken for a gap: %v", n.sink.interrupts)
	}
}
