package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// The Redis tests run Caddy processes that share hubs through the Redis
// at $SSE_REDIS_ADDR (default 127.0.0.1:6379), under a key prefix of their own; they use the base
// ports admin 2420-2430 and http 8420-8430 (a pair takes two: give each
// test ports of its own, or two Caddys share one port, SO_REUSEPORT).

var sharedRedis = ssetest.RedisAddr()

// redisPrefix returns a key prefix for one test, skipping the test when
// no Redis answers (failing it when SSE_REQUIRE_REDIS is set), and
// deletes the prefix's keys when the test ends.
func redisPrefix(t *testing.T) string {
	t.Helper()
	ssetest.RequireRedis(t, sharedRedis)
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "sse-e2e-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		rc := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
		defer rc.Close()
		ctx := context.Background()
		keys, _ := rc.Keys(ctx, "{"+prefix+":*").Result()
		for chunk := range slices.Chunk(keys, 500) {
			rc.Del(ctx, chunk...)
		}
	})
	return prefix
}

// redisGlobal is the global options of a hub shared through Redis.
func redisGlobal(prefix string, extra string) string {
	return fmt.Sprintf(`sse {
		hub default {
			history 20000
			transport redis {
				address %s
				prefix %s
			}
		}
	}
	%s`, sharedRedis, prefix, extra)
}

const redisSite = `sse /events {
		buffer 20000
	}
	sse_publish /publish`

// publishBatch publishes data items to topic in one JSON array request,
// as a careful publisher does: with an Idempotency-Key, retried when the
// connection fails without an answer (a reload closes idle keep-alive
// connections), so that each event is published once.
func publishBatch(t *testing.T, base, topic string, items []int) {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"topic":%q,"data":"%d"}`, topic, v)
	}
	b.WriteByte(']')
	key := fmt.Sprintf("batch-%d", items[0])
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequest(http.MethodPost, base+"/publish", strings.NewReader(b.String()))
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if attempt < 5 {
				continue
			}
			t.Errorf("publish to %s, attempt %d: %v", base, attempt, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusConflict && attempt < 5 {
			time.Sleep(50 * time.Millisecond) // the first attempt is still in flight: back off
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("publish to %s: %d %s", base, resp.StatusCode, body)
		}
		return
	}
}

// redisPair starts two Caddy instances sharing the default hub through
// Redis, under a key prefix of the test's own: a on adminBase and
// httpBase, b on the next ports. global is their global options, to start
// or reload them again.
func redisPair(t *testing.T, adminBase, httpBase int) (a, b *opsServer, global string) {
	t.Helper()
	global = redisGlobal(redisPrefix(t), "")
	a = opsStart(t, adminBase, httpBase, global, redisSite)
	b = opsStart(t, adminBase+1, httpBase+1, global, redisSite)
	return a, b, global
}

// TestRedisTwoInstances: two Caddy processes share a hub through Redis.
// Events published on either reach the subscribers of both, in one order;
// a client that switches instance in the middle of a burst, and whose
// instance reloads, gets each of 10,000 events once, in order.
func TestRedisTwoInstances(t *testing.T) {
	t.Parallel()
	a, b, global := redisPair(t, 2420, 8420)
	client := ssetest.NewClient()

	// one event each way; a receipt counts the local subscribers
	sb := ssetest.OpenT(t, client, b.base+"/events?topic=x", nil)
	pa := opsPublish(t, a.base+"/publish", "topic=x&data=from-a")
	if pa.Subscribers != 0 {
		t.Fatalf("a has no subscriber of x; its receipt says %d", pa.Subscribers)
	}
	if ev := sb.EventT(t, opsWait); ev.Data != "from-a" || ev.LastID != pa.ID {
		t.Fatalf("b's subscriber got %+v, want %s", ev, pa.ID)
	}
	pb := opsPublish(t, b.base+"/publish", "topic=x&data=from-b")
	if pb.Subscribers != 1 {
		t.Fatalf("b's receipt counts %d subscribers, want 1", pb.Subscribers)
	}
	_, s1, _ := transport.ParseID(pa.ID)
	_, s2, _ := transport.ParseID(pb.ID)
	if s2 != s1+1 {
		t.Fatalf("ids %s then %s: not one sequence", pa.ID, pb.ID)
	}
	sb.EventT(t, opsWait)

	// the admin API and the metrics show the transport's state
	r := opsDo(t, http.MethodGet, b.AdminURL("/sse/hubs/default"), "", "")
	var hub struct {
		Transport      string          `json:"transport"`
		TransportState transport.State `json:"transport_state"`
	}
	opsDecode(t, r.body, &hub)
	if hub.Transport != "redis" || !hub.TransportState.Up || hub.TransportState.WatchedTopics != 1 {
		t.Fatalf("b's hub: %s", r.body)
	}
	series, types := opsScrape(t, b.AdminURL("/metrics"))
	if series[`caddy_sse_transport_up{hub="default"}`] != 1 || types["caddy_sse_transport_up"] != "gauge" {
		t.Fatalf("transport_up: %v", series[`caddy_sse_transport_up{hub="default"}`])
	}

	// the burst: 10,000 events published in batches on both instances
	const total, batch = 10000, 50
	first := ssetest.OpenT(t, client, b.base+"/events?topic=burst", nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < total; i += batch {
			items := make([]int, batch)
			for j := range items {
				items[j] = i + j
			}
			base := a.base
			if (i/batch)%2 == 1 {
				base = b.base
			}
			publishBatch(t, base, "burst", items)
			if t.Failed() {
				return
			}
		}
	}()
	defer wg.Wait()

	// the subscriber: b, then a (reloaded midway), then b again
	var got []int
	var ids []string
	stream := first
	where := b
	reloaded := false
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < total {
		f, err := stream.Next(time.Until(deadline))
		if err == io.EOF { // the server ended the stream (a reload): reconnect
			stream = ssetest.OpenT(t, client, where.base+"/events?topic=burst", http.Header{"Last-Event-ID": {stream.LastID()}})
			continue
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		if f.Kind != ssetest.KindEvent {
			continue
		}
		if f.Type != "message" {
			t.Fatalf("after %d events: a %q event: %s", len(got), f.Type, f.Data)
		}
		n, err := strconv.Atoi(f.Data)
		if err != nil {
			t.Fatalf("data %q", f.Data)
		}
		got = append(got, n)
		ids = append(ids, f.LastID)
		switch {
		case len(got) == 3000 || len(got) == 7000:
			last := stream.LastID()
			stream.Close()
			where = map[bool]*opsServer{true: a, false: b}[where == b]
			stream = ssetest.OpenT(t, client, where.base+"/events?topic=burst", http.Header{"Last-Event-ID": {last}})
		case len(got) == 5000 && !reloaded:
			reloaded = true
			a.reload(t, global, strings.Replace(redisSite, "buffer 20000", "buffer 20000\n\t\theartbeat 10s", 1))
		}
	}
	stream.Close()
	wg.Wait()
	lost, dup := 0, 0
	seen := make(map[int]int)
	for _, n := range got {
		seen[n]++
	}
	for i := range total {
		switch seen[i] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	if lost != 0 || dup != 0 || !slices.IsSorted(got) {
		t.Fatalf("%d events lost, %d duplicated, in order %v", lost, dup, slices.IsSorted(got))
	}
	var prev uint64
	for _, id := range ids {
		_, seq, ok := transport.ParseID(id)
		if !ok || seq <= prev {
			t.Fatalf("id %s after seq %d", id, prev)
		}
		prev = seq
	}
	if !reloaded {
		t.Fatal("no reload happened")
	}
}

// TestRedisRestartAll: every instance stops and starts again; clients
// resume from their last event ids with nothing lost, since Redis kept the
// history.
func TestRedisRestartAll(t *testing.T) {
	t.Parallel()
	a, b, global := redisPair(t, 2422, 8422)
	var pubs []opsPublished
	for i := range 20 {
		srv := []*opsServer{a, b}[i%2]
		pubs = append(pubs, opsPublish(t, srv.base+"/publish", fmt.Sprintf("topic=r&data=%d", i)))
	}
	for _, srv := range []*opsServer{a, b} {
		if _, err := srv.Terminate(opsWait); err != nil {
			t.Fatal(err)
		}
	}
	a = opsStart(t, 2422, 8422, global, redisSite)
	b = opsStart(t, 2423, 8423, global, redisSite)
	client := ssetest.NewClient()
	s := ssetest.OpenT(t, client, b.base+"/events?topic=r", http.Header{"Last-Event-ID": {pubs[9].ID}})
	for i := 10; i < 20; i++ {
		ev := s.EventT(t, opsWait)
		if ev.Type != "message" || ev.Data != strconv.Itoa(i) || ev.LastID != pubs[i].ID {
			t.Fatalf("resumed after a restart: %+v, want %d with id %s", ev, i, pubs[i].ID)
		}
	}
	next := opsPublish(t, a.base+"/publish", "topic=r&data=next")
	if ev := s.EventT(t, opsWait); ev.Data != "next" || ev.LastID != next.ID {
		t.Fatalf("live after the restart: %+v", ev)
	}
	_, last, _ := transport.ParseID(pubs[19].ID)
	if _, seq, _ := transport.ParseID(next.ID); seq != last+1 {
		t.Fatalf("the sequence went on from %d to %d", last, seq)
	}
	var hubs map[string]json.RawMessage
	opsDecode(t, opsDo(t, http.MethodGet, a.AdminURL("/sse/hubs"), "", "").body, &hubs)
	if !strings.Contains(string(hubs["default"]), `"transport":"redis"`) {
		t.Fatalf("hubs: %s", hubs["default"])
	}
}

// privateRedis starts a redis-server of the test's own with an
// append-only file, so that a restart keeps its data (ssetest.PrivateRedis).
func privateRedis(t *testing.T) (addr string, kill, start func()) {
	t.Helper()
	return ssetest.PrivateRedis(t, "--appendonly", "yes", "--appendfsync", "always")
}

// TestRedisOutage: while Redis is down, publishes are answered with 503
// within the timeout and open streams keep their heartbeats; once Redis is
// back they go on, with nothing lost and no reset.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	addr, kill, start := privateRedis(t)
	global := fmt.Sprintf(`sse {
		hub default {
			transport redis {
				address %s
				timeout 500ms
			}
		}
	}`, addr)
	srv := opsStart(t, 2424, 8424, global, "sse /events {\n\t\theartbeat 300ms\n\t}\n\tsse_publish /publish")
	client := ssetest.NewClient()
	s := ssetest.OpenT(t, client, srv.base+"/events?topic=o", nil)
	p1 := opsPublish(t, srv.base+"/publish", "topic=o&data=before")
	if ev := s.EventT(t, opsWait); ev.Data != "before" {
		t.Fatalf("got %+v", ev)
	}

	kill()
	began := time.Now()
	r := opsDo(t, http.MethodPost, srv.base+"/publish", "application/x-www-form-urlencoded", "topic=o&data=lost")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(opsError(t, r), "unavailable") {
		t.Fatalf("publish during the outage: %d %s", r.status, r.body)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("the 503 took %v", d)
	}
	opsEventually(t, "the admin API shows the transport down", func() bool {
		var hub struct {
			TransportState transport.State `json:"transport_state"`
		}
		opsDecode(t, opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs/default"), "", "").body, &hub)
		return !hub.TransportState.Up && hub.TransportState.LastError != ""
	})
	series, _ := opsScrape(t, srv.AdminURL("/metrics"))
	if v := series[`caddy_sse_transport_up{hub="default"}`]; v != 0 {
		t.Fatalf("transport_up during the outage: %v", v)
	}
	// a new subscription is told to come back later, not refused for good
	refused := ssetest.OpenT(t, client, srv.base+"/events?topic=o", nil)
	frames, err := refused.ReadAll(opsWait)
	if err != nil || len(frames) != 2 || frames[0].Kind != ssetest.KindRetry || frames[0].Retry < 5000 ||
		!strings.Contains(frames[1].Comment, "unavailable") {
		t.Fatalf("a subscription during the outage: %+v, %v", frames, err)
	}
	if v := opsScrapeOne(t, srv, `caddy_sse_disconnects_total{hub="default",reason="unavailable"}`); v != 1 {
		t.Fatalf("subscriptions refused as unavailable: %v", v)
	}
	// the open stream keeps its heartbeats
	heartbeats := 0
	for heartbeats < 3 {
		f, err := s.Next(opsWait)
		if err != nil {
			t.Fatalf("the stream during the outage: %v", err)
		}
		if f.Kind == ssetest.KindEvent {
			t.Fatalf("an event during the outage: %+v", f)
		}
		if f.Kind == ssetest.KindComment {
			heartbeats++
		}
	}

	start()
	var p2 opsPublished
	opsEventually(t, "publishing works again", func() bool {
		r := opsDo(t, http.MethodPost, srv.base+"/publish", "application/x-www-form-urlencoded", "topic=o&data=after")
		if r.status == http.StatusOK {
			opsDecode(t, r.body, &p2)
		}
		return r.status == http.StatusOK
	})
	ev := s.EventT(t, opsWait)
	if ev.Data != "after" || ev.LastID != p2.ID || ev.Type != "message" {
		t.Fatalf("after the outage: %+v", ev)
	}
	e1, s1, _ := transport.ParseID(p1.ID)
	e2, s2, _ := transport.ParseID(p2.ID)
	if e1 != e2 || s2 != s1+1 {
		t.Fatalf("ids %s then %s: the history was not kept", p1.ID, p2.ID)
	}
}

// opsScrapeOne returns one series of a Caddy's metrics (0 when absent).
func opsScrapeOne(t *testing.T, srv *opsServer, series string) float64 {
	t.Helper()
	all, _ := opsScrape(t, srv.AdminURL("/metrics"))
	return all[series]
}

// TestRedisHistoryLost: when Redis loses the hub's history (FLUSHALL), the
// streams end with a retry hint, and clients that come back with an id of
// the lost history get a reset, then the new events.
func TestRedisHistoryLost(t *testing.T) {
	t.Parallel()
	addr, _, _ := privateRedis(t)
	global := fmt.Sprintf(`sse {
		hub default {
			transport redis {
				address %s
			}
		}
	}`, addr)
	srv := opsStart(t, 2425, 8425, global, redisSite)
	client := ssetest.NewClient()
	s := ssetest.OpenT(t, client, srv.base+"/events?topic=h", nil)
	p := opsPublish(t, srv.base+"/publish", "topic=h&data=before")
	if ev := s.EventT(t, opsWait); ev.LastID != p.ID {
		t.Fatalf("got %+v", ev)
	}
	rc := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// the stream ends (the instance notices within its probe interval)
	rest := opsReadToEnd(t, s)
	if len(rest) != 0 {
		t.Fatalf("events before the end: %+v", rest)
	}
	again := ssetest.OpenT(t, client, srv.base+"/events?topic=h", http.Header{"Last-Event-ID": {p.ID}})
	next := opsPublish(t, srv.base+"/publish", "topic=h&data=after")
	ev := again.EventT(t, opsWait)
	if ev.Type != "reset" || !strings.Contains(ev.Data, p.ID) {
		t.Fatalf("after the history was lost: %+v, want a reset", ev)
	}
	if ev := again.EventT(t, opsWait); ev.Data != "after" || ev.LastID != next.ID {
		t.Fatalf("then: %+v", ev)
	}
	if v := opsScrapeOne(t, srv, `caddy_sse_transport_resyncs_total{hub="default",reason="epoch"}`); v != 1 {
		t.Fatalf("epoch resyncs: %v", v)
	}
	if v := opsScrapeOne(t, srv, `caddy_sse_disconnects_total{hub="default",reason="resync"}`); v != 1 {
		t.Fatalf("streams ended for a resync: %v", v)
	}
}

// TestRedisIdempotencyAcrossInstances: a publish repeated with its
// Idempotency-Key on the other instance is answered as the first was and
// publishes nothing; another request under the key is a 422 there too.
func TestRedisIdempotencyAcrossInstances(t *testing.T) {
	t.Parallel()
	a, b, _ := redisPair(t, 2426, 8426)
	client := ssetest.NewClient()
	s := ssetest.OpenT(t, client, b.base+"/events?topic=i", nil)
	post := func(srv *opsServer, body string) opsResponse {
		req, err := http.NewRequest(http.MethodPost, srv.base+"/publish", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Idempotency-Key", "order-42")
		status, header, rb := ssetest.DoT(t, req)
		return opsResponse{status: status, header: header, body: string(rb)}
	}
	first := post(a, "topic=i&data=once")
	again := post(b, "topic=i&data=once")
	if first.status != http.StatusOK || again.status != http.StatusOK {
		t.Fatalf("first %d %s, again %d %s", first.status, first.body, again.status, again.body)
	}
	var p1, p2 opsPublished
	opsDecode(t, first.body, &p1)
	opsDecode(t, again.body, &p2)
	if p1.ID != p2.ID {
		t.Fatalf("the repeat on b got id %s, the first on a %s", p2.ID, p1.ID)
	}
	if r := post(b, "topic=i&data=other"); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("another request under the key on b: %d %s", r.status, r.body)
	}
	if ev := s.EventT(t, opsWait); ev.LastID != p1.ID {
		t.Fatalf("got %+v", ev)
	}
	next := opsPublish(t, a.base+"/publish", "topic=i&data=next")
	if ev := s.EventT(t, opsWait); ev.LastID != next.ID || ev.Data != "next" {
		t.Fatalf("after the repeats the subscriber got %+v, want only the next event", ev)
	}
	_, s1, _ := transport.ParseID(p1.ID)
	_, s2, _ := transport.ParseID(next.ID)
	if s2 != s1+1 {
		t.Fatalf("ids %s then %s: a repeat was published", p1.ID, next.ID)
	}
}

// TestRedisPausedReaderCatchesUpFromHistory: through Redis, a subscriber
// that stops reading while 9.6 MB of events are published (more than its
// socket buffers and the 64 KiB delivery window hold) is not dropped:
// when it reads again, its stream reads the history from Redis, a page at
// a time, and the client gets every event once, in order, on its first
// connection.
func TestRedisPausedReaderCatchesUpFromHistory(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2430, 8430, redisGlobal(redisPrefix(t), ""), `sse /events {
		buffer 64KiB
	}
	sse_publish /publish`)
	s := ssetest.OpenT(t, ssetest.NewSmallBufferClient(4096), srv.base+"/events?topic=p", nil)
	payload := strings.Repeat("p", 8<<10)
	var ids []string
	for range 1200 {
		ids = append(ids, opsPublish(t, srv.base+"/publish", "topic=p&data="+payload).ID)
	}
	for i, want := range ids {
		f := s.EventT(t, opsWait)
		if f.Type == "reset" || f.LastID != want {
			t.Fatalf("event %d: %s %s, want %s", i, f.Type, f.LastID, want)
		}
	}
	var hub adminHub
	opsDecode(t, opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs/default"), "", "").body, &hub)
	if hub.Disconnects["slow"] != 0 || hub.Subscribers != 1 {
		t.Fatalf("%d streams dropped as slow, %d subscribers", hub.Disconnects["slow"], hub.Subscribers)
	}
	if hub.Replayed == 0 {
		t.Fatal("nothing was read from the history: the test no longer covers it")
	}
	t.Logf("%d of %d events came from the history in Redis", hub.Replayed, len(ids))
}

// TestRedisDisconnectEveryNode: the admin API's disconnect, on one
// instance, ends the matching streams of both, each with the disconnect
// event, and answers the count of its own instance.
func TestRedisDisconnectEveryNode(t *testing.T) {
	t.Parallel()
	a, b, _ := redisPair(t, 2442, 8442)
	client := ssetest.NewClient()
	onA := ssetest.OpenT(t, client, a.base+"/events?topic=room/1", nil)
	onB := ssetest.OpenT(t, client, b.base+"/events?topic=room/2", nil)
	other := ssetest.OpenT(t, client, b.base+"/events?topic=lobby", nil)
	r := opsDo(t, http.MethodPost, a.AdminURL("/sse/hubs/default/disconnect"), "application/json", `{"topic":"room/*"}`)
	if r.status != http.StatusOK || strings.TrimSpace(r.body) != `{"disconnected":1}` {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for name, s := range map[string]*ssetest.Stream{"a": onA, "b": onB} {
		frames := opsReadToEnd(t, s)
		if len(frames) == 0 || frames[len(frames)-1].Type != "disconnect" || frames[len(frames)-1].Data != `{"reason":"revoked"}` {
			t.Fatalf("the stream on %s ended with %+v", name, frames)
		}
	}
	opsPublish(t, a.base+"/publish", "topic=lobby&data=still")
	if f := other.EventT(t, opsWait); f.Data != "still" {
		t.Fatalf("got %q", f.Data)
	}
}
