package caddysse

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/memory"
)

// readN reads events from s until it has n of them, and returns their
// ids; it fails t on anything else (an error, a reset, the stream's end).
func readN(t *testing.T, s *ssetest.Stream, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for len(ids) < n {
		f, err := s.NextEvent(wait)
		if err != nil {
			t.Errorf("after %d of %d events: %v", len(ids), n, err)
			return ids
		}
		if f.Type == "reset" {
			t.Errorf("a reset after %d of %d events", len(ids), n)
			return ids
		}
		ids = append(ids, f.LastID)
	}
	return ids
}

// numberedArray is a JSON array of n events to topic, their data numbered.
func numberedArray(topic string, n, size int) string {
	var b strings.Builder
	b.WriteByte('[')
	pad := strings.Repeat("x", size)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"topic":%q,"data":"%d %s"}`, topic, i, pad)
	}
	b.WriteByte(']')
	return b.String()
}

// TestStreamingBurstReachesAReader: a streaming publish of 20,000 small
// events, written in one go (a read of the body holds thousands of them),
// reaches a subscriber that reads as fast as it can, whole and in order,
// without dropping it; and so do ten 1,000-event arrays back to back
// (2.4 MB): within the route's buffer, however slowly the reader reads (a
// reader on a busy machine falls behind the publisher by more than the
// default 1 MiB, which is slowness by design).
func TestStreamingBurstReachesAReader(t *testing.T) {
	startCaddy(t, "", "sse /events {\n\t\tbuffer 4MiB\n\t}\n\tsse_publish /publish")
	hub := findHub(t, "default")
	slowBefore := hub.counters.disconnects[endSlow].Load()
	s := openStream(t, ssetest.NewClient(), "/events?topic=sburst", nil)

	const events = 20000
	var body strings.Builder
	for i := range events {
		fmt.Fprintf(&body, "data: %d\n\n", i)
	}
	a := postStream(t, testBase+"/publish?topic=sburst", sseType, body.String(), nil)
	if a.Status != http.StatusOK || a.Count != events {
		t.Fatalf("streaming publish: %d %s", a.Status, a.Body)
	}
	got := readN(t, s, events)
	if len(got) != events || got[0] != a.FirstID || got[len(got)-1] != a.LastID {
		t.Fatalf("got %d events from %s to %s, want %d from %s to %s", len(got), first(got), last(got), events, a.FirstID, a.LastID)
	}
	for i := 1; i < len(got); i++ {
		if seqOf(got[i]) != seqOf(got[i-1])+1 {
			t.Fatalf("event %d is %s after %s", i, got[i], got[i-1])
		}
	}

	var want []string
	for range 10 {
		r := post(t, "/publish", "application/json", numberedArray("sburst", 1000, 200))
		if r.Status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.Status, r.Body)
		}
		var results []publishResult
		mustUnmarshal(t, r.Body, &results)
		for _, res := range results {
			want = append(want, res.ID)
		}
	}
	if got := readN(t, s, len(want)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %d of the %d events of ten arrays, or not in order; disconnects %v", len(got), len(want), hub.Stats().Disconnects)
	}
	if n := hub.counters.disconnects[endSlow].Load() - slowBefore; n != 0 {
		t.Fatalf("%d streams dropped as slow", n)
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return s[len(s)-1]
}

// TestNonReaderIsDroppedReaderGetsAll: a subscriber that reads nothing,
// on a route with buffer 64KiB and a hub that keeps 200 events, is dropped
// as slow once the events it has yet to be sent have left the history and
// the delivery window, while a subscriber that reads gets every event and
// publishing never waits. The dropped client resumes with a reset, since
// what it missed is gone.
func TestNonReaderIsDroppedReaderGetsAll(t *testing.T) {
	startCaddy(t, `sse {
		hub small {
			history 200
		}
	}`, `sse /events {
		hub small
		buffer 64KiB
	}
	sse_publish /publish {
		hub small
	}`)
	hub := findHub(t, "small")
	slowBefore := hub.counters.disconnects[endSlow].Load()
	if w := hub.Stats().Window; w.MaxBytes != 64<<10 {
		t.Fatalf("the hub's window is %d bytes, want 64 KiB", w.MaxBytes)
	}
	slow := openStream(t, ssetest.NewSmallBufferClient(4096), "/events?topic=nr", nil)
	fast := openStream(t, ssetest.NewClient(), "/events?topic=nr", nil)
	var fastGot []string
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			f, err := fast.NextEvent(wait)
			if err != nil {
				t.Errorf("the reader: %v", err)
				return
			}
			if f.Data == "stop" {
				return
			}
			fastGot = append(fastGot, f.LastID)
		}
	})

	payload := strings.Repeat("y", 8<<10)
	var ids []string
	var slowest time.Duration
	for i := 0; i < 5000 && hub.counters.disconnects[endSlow].Load() == slowBefore; i++ {
		start := time.Now()
		ids = append(ids, publishTo(t, payload, "nr").ID)
		slowest = max(slowest, time.Since(start))
	}
	if hub.counters.disconnects[endSlow].Load() == slowBefore {
		t.Fatalf("the subscriber that reads nothing was not dropped after %d events of 8 KiB", len(ids))
	}
	if slowest > time.Second {
		t.Errorf("a publish took %v: publishing waited for the slow subscriber", slowest)
	}
	eventually(t, "only the reader is left", func() bool { return hub.Stats().Subscribers == 1 })
	publishTo(t, "stop", "nr")
	wg.Wait()
	if strings.Join(fastGot, ",") != strings.Join(ids, ",") {
		t.Fatalf("the reader got %d of %d events, or not in order; %+v", len(fastGot), len(ids), hub.Stats().Disconnects)
	}
	if n := hub.counters.disconnects[endSlow].Load() - slowBefore; n != 1 {
		t.Errorf("%d slow disconnects counted, want 1", n)
	}

	// the dropped client reads what it was sent, then resumes: what it
	// missed is gone, so it gets a reset and the retained events
	for {
		if _, err := slow.Next(wait); err != nil {
			break
		}
	}
	resumed := openStream(t, ssetest.NewClient(), "/events?topic=nr", http.Header{"Last-Event-ID": {slow.LastID()}})
	if f := nextEvent(t, resumed); f.Type != "reset" {
		t.Fatalf("resumed with %q, want a reset", f.Type)
	}
	t.Logf("dropped after %d events of 8 KiB; slowest publish %v", len(ids), slowest)
}

// TestBacklogIsHeldOnce: 2,000 subscribers that are all 1,000 events
// behind cost the hub those events once, not once per subscriber: the
// heap grows by about the events' size, and each subscriber still gets
// all of them when its writer takes them.
func TestBacklogIsHeldOnce(t *testing.T) {
	h := testHub(t)
	const subscribers, events, size = 2000, 1000, 1000
	subs := make([]*subscriber, subscribers)
	for i := range subs {
		subs[i] = startedStream(t, h, nil).sub
	}
	before := heapInUse()
	msgs := make([]transport.Message, 100)
	for i := range msgs {
		msgs[i] = transport.Message{Topics: []string{"t"}, Data: strings.Repeat("z", size), Retry: -1}
	}
	for range events / len(msgs) {
		if _, err := h.Publish(context.Background(), transport.PublishRequest{Messages: msgs}); err != nil {
			t.Fatal(err)
		}
	}
	growth := heapInUse() - before
	wire := int64(events * (size + 20))
	t.Logf("%d subscribers %d events behind: heap +%.1f MB for %.1f MB of events", subscribers, events, float64(growth)/1e6, float64(wire)/1e6)
	// per-subscriber queues of pointers alone would be 16 MB
	if growth > 3*wire {
		t.Fatalf("the heap grew by %d bytes for %d bytes of events", growth, wire)
	}
	for _, s := range []*subscriber{subs[0], subs[subscribers/2], subs[subscribers-1]} {
		n := 0
		for {
			_, got, ok := h.backlog.take(s, nil, roundBytes)
			if !ok {
				t.Fatal("the window does not hold the subscriber's events")
			}
			if got == 0 {
				break
			}
			n += got
		}
		if n != events {
			t.Fatalf("a subscriber took %d events from the window, want %d", n, events)
		}
	}
}

// TestReplayIsAPosition: 500 subscribers resuming from the oldest id of a
// hub whose 64 topics hold 1,000 events each cost each a page of the
// history (which they hold while their clients read nothing), not the
// 64,000 events they have yet to be sent.
func TestReplayIsAPosition(t *testing.T) {
	h := testHub(t)
	topics := make([]string, 64)
	for i := range topics {
		topics[i] = fmt.Sprintf("topic-%02d", i)
	}
	msgs := make([]transport.Message, len(topics))
	for i, topic := range topics {
		msgs[i] = transport.Message{Topics: []string{topic}, Data: strings.Repeat("w", 64), Retry: -1}
	}
	var firstID string
	for range 1000 {
		rs, err := h.Publish(context.Background(), transport.PublishRequest{Messages: msgs})
		if err != nil {
			t.Fatal(err)
		}
		if firstID == "" {
			firstID = rs[0].ID
		}
	}
	const streams = 500
	before := heapInUse()
	pages := make([]transport.Replay, streams)
	for i := range pages {
		req := subscribeRequest{topics: topics}
		req.replay = transport.ReplayQuery{Resume: true, LastEventID: firstID}
		sub, rep, err := h.Subscribe(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Reset || !rep.More {
			t.Fatalf("the first page: reset %v, more %v", rep.Reset, rep.More)
		}
		sub.pos.Store(rep.Events[len(rep.Events)-1].Seq)
		pages[i] = rep // held, as a stream that cannot write it holds it
	}
	perStream := (heapInUse() - before) / streams
	t.Logf("a resuming stream costs %d bytes with its first page of %d events (of 63,999 to send)", perStream, len(pages[0].Events))
	if perStream > 64<<10 {
		t.Fatalf("a resuming stream costs %d bytes", perStream)
	}
	runtime.KeepAlive(pages)
}

// heapInUse returns the bytes of live heap objects, after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestPausedReaderCatchesUpFromHistory: a subscriber that stops reading
// while 3 MiB of events are published (more than its socket buffers and
// the 64 KiB delivery window hold, less than the history) is not dropped:
// when it reads again, its stream reads the history from its position,
// a page at a time, and the client gets every event once, in order, on
// its first connection.
func TestPausedReaderCatchesUpFromHistory(t *testing.T) {
	startCaddy(t, `sse {
		hub paused {
			history 5000
		}
	}`, `sse /events {
		hub paused
		buffer 64KiB
	}
	sse_publish /publish {
		hub paused
	}`)
	hub := findHub(t, "paused")
	before := hub.Stats()
	s := openStream(t, ssetest.NewSmallBufferClient(4096), "/events?topic=p", nil)
	payload := strings.Repeat("p", 64<<10)
	var ids []string
	for range 48 {
		r := post(t, "/publish?topic=p", "text/plain", payload)
		if r.Status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.Status, r.Body)
		}
		ids = append(ids, r.Result.ID)
	}
	if got := readN(t, s, len(ids)); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("got %d of %d events, or not in order", len(got), len(ids))
	}
	after := hub.Stats()
	if n := after.Disconnects["slow"] - before.Disconnects["slow"]; n != 0 {
		t.Fatalf("%d streams dropped as slow", n)
	}
	replayed := after.Replayed - before.Replayed
	if replayed == 0 {
		t.Fatal("nothing was read from the history: the test no longer covers it")
	}
	t.Logf("%d of %d events came from the history", replayed, len(ids))
}

// TestLongReplayArrivesAtOnce: a resumption whose replay is many pages
// long, with nothing published meanwhile, is sent whole at once: the
// stream reads on after its first page without waiting for an event or
// a heartbeat (here a minute away).
func TestLongReplayArrivesAtOnce(t *testing.T) {
	startCaddy(t, "", `sse /events {
		heartbeat 1m
	}
	sse_publish /publish`)
	payload := strings.Repeat("r", 1<<10)
	var ids []string
	for range 300 { // 300 KiB: five pages
		ids = append(ids, publishTo(t, payload, "long").ID)
	}
	start := time.Now()
	s := openStream(t, ssetest.NewClient(), "/events?topic=long", http.Header{"Last-Event-ID": {ids[0]}})
	if got := readN(t, s, len(ids)-1); strings.Join(got, ",") != strings.Join(ids[1:], ",") {
		t.Fatalf("got %d of %d events, or not in order", len(got), len(ids)-1)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the replay took %v", d)
	}
}

// TestReplayingStreamIsDroppedWhenItsEventsAreEvicted: a stream still
// reading its replay (it has sent its first page; its client reads
// nothing more) is dropped as slow at once when an event it has yet to
// send leaves the history, and not before.
func TestReplayingStreamIsDroppedWhenItsEventsAreEvicted(t *testing.T) {
	h, err := newHub("replaying", new(memory.Transport), transport.Limits{Events: 10, MaxBytes: 64 << 20}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Destruct() })
	publish := func(n int) []transport.Receipt {
		msgs := make([]transport.Message, n)
		for i := range msgs {
			msgs[i] = transport.Message{Topics: []string{"t"}, Data: strings.Repeat("e", 40<<10), Retry: -1}
		}
		rs, err := h.Publish(context.Background(), transport.PublishRequest{Messages: msgs})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	first := publish(10)[0].ID
	rec := httptest.NewRecorder()
	out := newResponseOutput(rec)
	req := subscribeRequest{topics: []string{"t"}, out: out}
	req.replay = transport.ReplayQuery{Resume: true, LastEventID: first}
	sub, rep, err := h.Subscribe(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reset || !rep.More || len(rep.Events) != 1 {
		t.Fatalf("the first page: reset %v, more %v, %d events; the test needs a page of one event", rep.Reset, rep.More, len(rep.Events))
	}
	r := httptest.NewRequest(http.MethodGet, "/events", nil)
	st := newStream(&Subscribe{logger: zap.NewNop()}, sub, out, r, time.Now())
	if err := st.start(rec, 3000, rep, first, "reset"); err != nil {
		t.Fatal(err)
	}
	if h.replaying.Load() != 1 {
		t.Fatalf("%d streams counted replaying, want 1", h.replaying.Load())
	}
	for range 2 { // evict the event it resumed from, then the one it sent
		publish(1)
		if reason := sub.endReason(); reason != endNone {
			t.Fatalf("the stream ended as %s when an event it did not need was evicted", reason)
		}
	}
	publish(1) // evicts the next event it has yet to send
	if reason := sub.endReason(); reason != endSlow {
		t.Fatalf("the stream is %q after the next event it needs was evicted, want slow", reason)
	}
	if n := h.counters.disconnects[endSlow].Load(); n != 1 {
		t.Fatalf("%d slow disconnects counted, want 1", n)
	}
	h.Unsubscribe(sub, endSlow)
	if h.replaying.Load() != 0 {
		t.Fatalf("%d streams counted replaying after the end, want 0", h.replaying.Load())
	}
}

// TestSendBufferBoundsANonReader: over HTTP/1.1 a client that reads
// nothing makes the server write no more than about send_buffer (doubled
// by the kernel) before its writes stall, instead of the kernel's own
// send buffer, which grows to megabytes: what it pins in the kernel, and
// what the server spends writing to it.
func TestSendBufferBoundsANonReader(t *testing.T) {
	startCaddy(t, `sse {
		hub sb {
			history 1000
		}
	}`, `sse /events {
		hub sb
	}
	sse /kernel {
		hub sb
		send_buffer off
	}
	sse_publish /publish {
		hub sb
		max_size 4MiB
	}`)
	hub := findHub(t, "sb")
	stuck := ssetest.NewSmallBufferClient(4096)
	openStream(t, stuck, "/events?topic=bounded", nil)
	openStream(t, stuck, "/kernel?topic=kernel", nil)
	payload := strings.Repeat("k", 64<<10)
	for range 160 { // 10 MiB each
		for _, topic := range []string{"bounded", "kernel"} {
			if r := post(t, "/publish?topic="+topic, "text/plain", payload); r.Status != http.StatusOK {
				t.Fatalf("publish: %d %s", r.Status, r.Body)
			}
		}
	}
	written := func(topic string) uint64 {
		hub.mu.RLock()
		defer hub.mu.RUnlock()
		s := hub.topics[topic].subs[0]
		return s.pieces.Load()
	}
	// the writers stall: their pieces stop growing
	var bounded, kernel uint64
	eventually(t, "both writers stall", func() bool {
		b, k := written("bounded"), written("kernel")
		time.Sleep(300 * time.Millisecond) // a write that still makes progress moves on within this
		stalled := written("bounded") == b && written("kernel") == k
		bounded, kernel = b, k
		return stalled
	})
	t.Logf("written before the writes stalled: %d KiB with send_buffer 256KiB, %d KiB with the kernel's own", bounded*32, kernel*32)
	if bounded*32<<10 > 1536<<10 {
		t.Fatalf("with send_buffer 256KiB the server wrote %d KiB to a client that reads nothing", bounded*32)
	}
	if kernel <= bounded {
		t.Fatalf("the kernel's own send buffer took %d KiB, no more than send_buffer's %d KiB: the test shows nothing", kernel*32, bounded*32)
	}
}
