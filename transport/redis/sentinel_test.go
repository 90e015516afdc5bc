package redis

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/transport"
)

// startSentinel runs `redis-server <conf> --sentinel` monitoring primary
// as master, on a free port, and returns its address; it skips the test
// (fails it with SSE_REQUIRE_REDIS) if redis-server has no sentinel mode.
func startSentinel(t *testing.T, master string, primary *privateRedis) string {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 2\n"+
		"sentinel down-after-milliseconds %[4]s 1000\n"+
		"sentinel failover-timeout %[4]s 5000\n",
		port, dir, filepath.Join(dir, "log"), master, primary.port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := goredis.NewSentinelClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.GetMasterAddrByName(context.Background(), master).Err() != nil {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			if os.Getenv("SSE_REQUIRE_REDIS") != "" {
				t.Fatalf("redis-server --sentinel did not start:\n%s%s", out.String(), log)
			}
			t.Skipf("redis-server --sentinel did not start (no sentinel mode here?):\n%s%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("sentinel at %s did not answer\n%s", addr, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

// TestSentinelFailover: a hub on a primary with one replica and three
// sentinels (down-after-milliseconds 1000). When the primary dies,
// publishes resume on the promoted replica, in about 3 s here, and the
// subscribing node delivers every event once, in order.
//
// With durable servers (appendfsync always) the hub goes on in its epoch,
// since the replica had every event, and no stream is reset. Without, the
// nodes cannot tell whether the replica missed events, and a new epoch
// starts: the streams end (reason epoch) and go on from the new epoch.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a failover takes seconds")
	}
	// the two failovers at once: each has servers and sentinels of its
	// own, and both mostly wait on the sentinels' timers
	t.Run("durable", func(t *testing.T) { t.Parallel(); testFailover(t, true) })
	t.Run("not durable", func(t *testing.T) { t.Parallel(); testFailover(t, false) })
}

func testFailover(t *testing.T, durable bool) {
	master := "ssemaster-volatile" // names of their own: the two run at once
	if durable {
		master = "ssemaster-durable"
	}
	var args []string
	if durable {
		args = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	// no diskless-sync delay: the replica syncs at once, not after 5 s
	primary := startPrivateRedis(t, append(args, "--repl-diskless-sync-delay", "0")...)
	replica := startPrivateRedis(t, append(args, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))...)
	eventually(t, "the replica in sync", func() bool {
		info, err := replica.client().Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	var sentinels []string
	for range 3 {
		sentinels = append(sentinels, startSentinel(t, master, primary))
	}
	// the sentinels know the replica and one another before the failover
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: sentinels[0], MaxRetries: -1})
	defer sc.Close()
	// a sentinel learns of replicas from the primary's INFO, which it asks
	// for every 10 s once it has the first answer: the net is wide
	found := time.Now()
	eventuallyWithin(t, 30*time.Second, "the sentinels to find each other and the replica", func() bool {
		others, err1 := sc.Sentinels(context.Background(), master).Result()
		replicas, err2 := sc.Replicas(context.Background(), master).Result()
		return err1 == nil && err2 == nil && len(others) == 2 && len(replicas) == 1
	})
	t.Logf("the sentinels found each other and the replica in %v", time.Since(found).Round(10*time.Millisecond))

	viaSentinel := func(timeout time.Duration) func(*Transport) {
		return func(tr *Transport) {
			tr.Addresses = nil
			tr.Sentinel = &SentinelConfig{Master: master, Addresses: sentinels}
			tr.Timeout = caddy.Duration(timeout)
		}
	}
	// two nodes (different timeouts: clients of their own)
	sub := openNode(t, "", "p", "h", defaultLimits, viaSentinel(500*time.Millisecond))
	pub := openNode(t, "", "p", "h", defaultLimits, viaSentinel(600*time.Millisecond))
	sub.watch(t, "t")
	before := pub.publishN(t, 10, "t")
	sub.sink.awaitSeq(t, before[len(before)-1])
	epoch, _, _ := transport.ParseID(pub.publish(t, "last before", "t").ID)
	// the replica has every event: a failover loses none
	if n, err := primary.client().Wait(context.Background(), 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d replicas, %v", n, err)
	}

	primary.kill()
	killed := time.Now()
	var r transport.Receipt
	for {
		rs, err := pub.Publish(context.Background(), transport.PublishRequest{
			Messages: []transport.Message{{Topics: []string{"t"}, Data: "first after", Retry: -1}},
		})
		if err == nil {
			r = rs[0]
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("no publish succeeded within 20 s of the primary's death: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling: the failover is in other processes
	}
	took := time.Since(killed)
	t.Logf("publishes resumed %v after the primary died", took.Round(10*time.Millisecond))
	e, seq, _ := transport.ParseID(r.ID)
	after := pub.publishN(t, 10, "t")
	last := after[len(after)-1]
	if durable {
		if e != epoch || seq != 12 {
			t.Fatalf("first publish after the failover: %s, want seq 12 of epoch %s", r.ID, epoch)
		}
		sub.sink.awaitSeq(t, last)
		sub.sink.checkSeqs(t, seqRange(1, 22))
		sub.sink.mu.Lock()
		defer sub.sink.mu.Unlock()
		if len(sub.sink.interrupts) != 0 {
			t.Fatalf("a failover that lost nothing interrupted streams: %v", sub.sink.interrupts)
		}
		return
	}
	if e == epoch || seq != 1 {
		t.Fatalf("first publish after the failover: %s, want seq 1 of a new epoch", r.ID)
	}
	sub.sink.await(t, "the new epoch's events", func(evs []*transport.Event, ints []interruption) bool {
		return len(evs) > 0 && evs[len(evs)-1].Seq == last && len(ints) > 0
	})
	sub.sink.checkSeqs(t, append(seqRange(1, 11), seqRange(1, 11)...))
	sub.sink.mu.Lock()
	defer sub.sink.mu.Unlock()
	if len(sub.sink.interrupts) != 1 || sub.sink.interrupts[0].reason != reasonEpoch {
		t.Fatalf("interrupts %v, want one of reason epoch", sub.sink.interrupts)
	}
}

// TestSentinelStart: a master the sentinels do not know fails the load;
// sentinels that do not answer do not (an outage: the hub opens
// unavailable); a known master serves.
func TestSentinelStart(t *testing.T) {
	t.Parallel()
	primary := startPrivateRedis(t)
	s := startSentinel(t, "known", primary)
	tr := &Transport{Sentinel: &SentinelConfig{Master: "unknown", Addresses: []string{s}}}
	wantErr(t, openErr(t, tr), `know no master named "unknown"`)

	down := "127.0.0.1:" + strconv.Itoa(freePort(t))
	n := openDownNode(t, "", "p", "h", defaultLimits, withTimeout(faultTimeout), func(tr *Transport) {
		tr.Addresses, tr.Sentinel = nil, &SentinelConfig{Master: "known", Addresses: []string{down}}
	})
	if st := n.Stats().State; st.Up || st.LastError == "" {
		t.Fatalf("state without sentinels: %+v", st)
	}

	n = openNode(t, "", "p", "h", defaultLimits, func(tr *Transport) {
		tr.Addresses, tr.URL = nil, "redis+sentinel://"+down+","+s+"/known"
	})
	n.watch(t, "x")
	n.sink.awaitSeq(t, seqOf(t, n.publish(t, "a", "x").ID))
}
