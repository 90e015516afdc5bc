package caddysse

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestEncodeLeavesStreamsAlone runs the stream behind encode, in the
// default directive order and in both explicit orders, with a client that
// accepts gzip: the stream is not compressed, the headers come before any
// event, and each event arrives as soon as it is published.
func TestEncodeLeavesStreamsAlone(t *testing.T) {
	sites := map[string]string{
		"default order": `encode gzip zstd
	sse /events
	sse_publish /publish`,
		"encode first in a route": `route {
		encode gzip zstd
		sse /events
	}
	sse_publish /publish`,
		"sse first in a route": `route {
		sse /events
		encode gzip zstd
	}
	sse_publish /publish`,
	}
	for name, site := range sites {
		t.Run(name, func(t *testing.T) {
			startCaddy(t, "", site)
			// the headers arrive although nothing has been published
			s := openStream(t, ssetest.NewClient(), "/events?topic=enc", http.Header{"Accept-Encoding": {"gzip, zstd"}})
			if ce := s.Resp.Header.Get("Content-Encoding"); ce != "" {
				t.Fatalf("Content-Encoding %q", ce)
			}
			for i := range 5 {
				want := fmt.Sprintf("event %d %s", i, strings.Repeat("compressible ", 20))
				publishTo(t, want, "enc")
				f, err := s.NextEvent(2 * time.Second)
				if err != nil || f.Data != want {
					t.Fatalf("event %d: %q, %v", i, f.Data, err)
				}
			}
		})
	}
}

// TestEncodedStreamStaysWhole: when a deferred header takes no-transform
// away, encode compresses the stream; every event must still go through
// the compressor (the stream does not write past it once started) and
// arrive whole and at once.
func TestEncodedStreamStaysWhole(t *testing.T) {
	startCaddy(t, "", `route {
		encode gzip
		header >Cache-Control "no-cache"
		sse /events
	}
	sse_publish /publish`)
	// Go's transport asks for gzip itself and decompresses
	client := &http.Client{Transport: &http.Transport{}}
	s := openStream(t, client, "/events?topic=gz", nil)
	if !s.Resp.Uncompressed {
		t.Fatalf("the stream was not compressed (Content-Encoding %q): the test no longer covers it", s.Resp.Header.Get("Content-Encoding"))
	}
	for i := range 5 {
		want := fmt.Sprintf("event %d %s", i, strings.Repeat("compressible ", 20))
		publishTo(t, want, "gz")
		f, err := s.NextEvent(2 * time.Second)
		if err != nil || f.Data != want {
			t.Fatalf("event %d: %q, %v", i, f.Data, err)
		}
	}
}

// TestSlowSubscriberIsDropped: a subscriber that stops reading, while
// everything it has yet to be sent is still in the history, is dropped as
// slow once its writes have made no progress for write_timeout; publishing
// never waits for it, another subscriber gets everything, and the slow one
// resumes from history without loss once it reads again.
func TestSlowSubscriberIsDropped(t *testing.T) {
	startCaddy(t, `sse {
		hub slow {
			history 5000
		}
	}`, `sse /events {
		hub slow
		write_timeout 500ms
	}
	sse /fast {
		hub slow
	}
	sse_publish /publish {
		hub slow
		max_size 10MiB
	}`)
	hub := findHub(t, "slow")
	slowBefore := hub.counters.disconnects[endSlow].Load()

	slow := openStream(t, ssetest.NewSmallBufferClient(4096), "/events?topic=s", nil)
	fast := openStream(t, ssetest.NewClient(), "/fast?topic=s", nil)
	var fastGot []string
	var fastErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			f, err := fast.NextEvent(wait)
			if err != nil {
				fastErr = err
				return
			}
			if f.Data == "stop" {
				return
			}
			fastGot = append(fastGot, f.LastID)
		}
	})

	// 2 MiB of events of 64 KiB, more than the slow client's socket
	// buffers (and the server's send_buffer) hold: its writes stall, and
	// it is dropped after write_timeout, while the other one gets
	// everything
	payload := strings.Repeat("x", 64<<10)
	var ids []string
	var maxLatency time.Duration
	publishOne := func() publishResult {
		start := time.Now()
		r := post(t, "/publish?topic=s", "text/plain", payload)
		maxLatency = max(maxLatency, time.Since(start))
		if r.Status != 200 {
			t.Fatalf("publish: %d %s", r.Status, r.Body)
		}
		ids = append(ids, r.Result.ID)
		return r.Result
	}
	for range 32 {
		publishOne()
	}
	eventually(t, "the stalled subscriber is dropped", func() bool { return hub.Stats().Subscribers == 1 })
	if r := publishOne(); r.Subscribers != 1 {
		t.Fatalf("an event published after the drop went to %d subscribers, want the fast one", r.Subscribers)
	}
	if maxLatency > time.Second {
		t.Errorf("a publish took %v: publishing waited for the slow subscriber", maxLatency)
	}
	if n := hub.counters.disconnects[endSlow].Load() - slowBefore; n != 1 {
		t.Errorf("%d slow disconnects counted, want 1", n)
	}
	publishTo(t, "stop", "s")
	wg.Wait()
	if fastErr != nil || strings.Join(fastGot, ",") != strings.Join(ids, ",") {
		t.Fatalf("the fast subscriber got %d of %d events (%v)", len(fastGot), len(ids), fastErr)
	}

	// the slow client reads again: its stream ends, it resumes from
	// history and gets everything (through the other route of the hub,
	// whose write_timeout is not cut so fine for a client that parses
	// 2 MiB as it goes)
	var slowGot []string
	for {
		f, err := slow.Next(wait)
		if err != nil {
			break // the dropped stream ended
		}
		if f.Kind == ssetest.KindEvent {
			slowGot = append(slowGot, f.LastID)
		}
	}
	s := openStream(t, ssetest.NewClient(), "/fast?topic=s", http.Header{"Last-Event-ID": {slow.LastID()}})
	for len(slowGot) < len(ids)+1 {
		f := nextEvent(t, s)
		if f.Type == "reset" {
			t.Fatal("unexpected reset")
		}
		slowGot = append(slowGot, f.LastID)
	}
	if strings.Join(slowGot[:len(ids)], ",") != strings.Join(ids, ",") {
		t.Fatalf("the slow subscriber's events differ from the published ones")
	}
	t.Logf("dropped after %d events of 64 KiB; slowest publish %v", len(ids), maxLatency)
}

// TestNoLeakWithConnectionChurn connects and disconnects 1,000
// subscribers twice: afterwards the hub has no subscribers and the
// goroutines are back to their baseline.
func TestNoLeakWithConnectionChurn(t *testing.T) {
	startCaddy(t, "", `sse /events {
		heartbeat 1s
	}
	sse_publish /publish`)
	hub := findHub(t, "default")
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, DisableKeepAlives: true}}
	baseline := runtime.NumGoroutine()
	for round := range 2 {
		streams := make([]*ssetest.Stream, 0, 1000)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 1000 {
			wg.Go(func() {
				s, err := ssetest.Open(client, fmt.Sprintf("%s/events?topic=churn&topic=c%d", testBase, i%50), nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				streams = append(streams, s)
				mu.Unlock()
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if n := hub.Stats().Subscribers; n != 1000 {
			t.Fatalf("round %d: %d subscribers, want 1000", round, n)
		}
		if r := publishTo(t, "to all", "churn"); r.Subscribers != 1000 {
			t.Fatalf("round %d: published to %d subscribers", round, r.Subscribers)
		}
		for _, s := range streams {
			s.Close()
		}
		eventually(t, "every subscriber has left the hub", func() bool { return hub.Stats().Subscribers == 0 })
	}
	hub.mu.RLock()
	topics := len(hub.topics)
	hub.mu.RUnlock()
	if topics != 0 {
		t.Fatalf("%d topics left in the hub", topics)
	}
	client.CloseIdleConnections()
	eventually(t, fmt.Sprintf("goroutines return to their baseline of %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline+5
	})
}

// TestTopicChurnGivesBackMemory: 2,000 subscribers of 64 topics each,
// all distinct, come and go: the hub's and the transport's tables of
// topics give their room back (a Go map keeps the room of its largest
// size; a red-team run saw 16 MB stay).
func TestTopicChurnGivesBackMemory(t *testing.T) {
	h := testHub(t)
	before := heapInUse()
	for round := range 2 {
		subs := make([]*subscriber, 2000)
		for i := range subs {
			topics := make([]string, 64)
			for j := range topics {
				topics[j] = fmt.Sprintf("churn-%d-%d-%d", round, i, j)
			}
			s, _, err := h.Subscribe(context.Background(), subscribeRequest{topics: topics})
			if err != nil {
				t.Fatal(err)
			}
			subs[i] = s
		}
		for _, s := range subs {
			h.Unsubscribe(s, endClient)
		}
	}
	grown := heapInUse() - before
	t.Logf("after 2 x 128,000 topics came and went, the heap holds %d KB more", grown>>10)
	if grown > 2<<20 {
		t.Fatalf("after 2 x 128,000 topics came and went, the heap holds %d KB more", grown>>10)
	}
}
