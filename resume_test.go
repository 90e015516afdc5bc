package caddysse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// published is what the publishers of a test published, in id order.
type published struct {
	mu     sync.Mutex
	events []publishResult
	data   map[string]string // id → data
}

func (p *published) add(r publishResult, data string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, r)
	p.data[r.ID] = data
}

// on returns the ids of the events published to any of topics, in id order.
func (p *published) on(topics ...string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	sorted := slices.Clone(p.events)
	slices.SortFunc(sorted, func(a, b publishResult) int { return int(seqOf(a.ID) - seqOf(b.ID)) })
	var ids []string
	for _, e := range sorted {
		for _, t := range e.Topics {
			if slices.Contains(topics, t) {
				ids = append(ids, e.ID)
				break
			}
		}
	}
	return ids
}

func seqOf(id string) int64 {
	_, seq, ok := transport.ParseID(id)
	if !ok {
		panic("bad id " + id)
	}
	return int64(seq)
}

// TestResumeWhilePublishing reconnects a subscriber of two topics over and
// over, each time with the id of the last event it got, while publishers
// keep publishing to those and other topics: it must receive every event
// of its topics exactly once, in order. TestHubReplaySeam holds the hub to
// this with many more reconnections; here (and over each protocol, and
// taken over) the resumptions go through Caddy and its connections.
func TestResumeWhilePublishing(t *testing.T) {
	startCaddy(t, `sse {
		hub default {
			history 100000
		}
	}`, basicSite)
	client := ssetest.NewClient()
	resumeWhilePublishing(t, func(data string, topics []string) (publishResult, error) {
		pr := post(t, "/publish", "application/x-www-form-urlencoded",
			url.Values{"topic": topics, "data": {data}}.Encode())
		if pr.Status != http.StatusOK {
			return publishResult{}, fmt.Errorf("publish: %d %s", pr.Status, pr.Body)
		}
		return pr.Result, nil
	}, func(header http.Header) *ssetest.Stream {
		return openStream(t, client, "/events?topic=ra&topic=rb", header)
	}, 100, 30, 3*time.Millisecond)
}

// resumeWhilePublishing is TestResumeWhilePublishing's test: publish
// publishes (from several goroutines at once), open subscribes to the
// topics ra and rb with a header. Six publishers publish, every pace
// (none for 0), at least quota events each (five of them to ra or rb),
// and on until the subscriber has reconnected minReconnects times.
func resumeWhilePublishing(t *testing.T, publish func(data string, topics []string) (publishResult, error),
	open func(http.Header) *ssetest.Stream, quota, minReconnects int, pace time.Duration) {
	t.Helper()
	topicSets := [][]string{{"ra"}, {"rb"}, {"rc"}, {"ra", "rc"}, {"rb", "rc"}, {"ra", "rb"}}

	// the first connection: its position is where the subscriber starts
	s := open(nil)
	for s.LastID() == "" {
		if _, err := s.Next(wait); err != nil {
			t.Fatal(err)
		}
	}

	pub := &published{data: map[string]string{}}
	var wg sync.WaitGroup
	defer wg.Wait()
	var reconnected atomic.Int64
	for i, topics := range topicSets {
		wg.Go(func() {
			// paced, so that the subscriber keeps up and its reconnections
			// fall between live events as well as inside a replay; on
			// until the subscriber has reconnected often enough (a busy
			// machine reconnects more slowly), at most 12 times as long
			var tick <-chan time.Time
			if pace > 0 {
				ticker := time.NewTicker(pace)
				defer ticker.Stop()
				tick = ticker.C
			}
			for n := 0; n < 12*quota && (n < quota || reconnected.Load() < int64(minReconnects)); n++ {
				if tick != nil {
					<-tick
				}
				data := fmt.Sprintf("p%d-%d", i, n)
				r, err := publish(data, topics)
				if err != nil {
					t.Error(err)
					return
				}
				pub.add(r, data)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var got, gotData []string
	deadline := time.Now().Add(time.Minute)
	reconnects := 0
	finished := false
	for !finished {
		// read a few events, then drop the connection and resume
		for n := 0; n < 1+reconnects%17 && !finished; {
			f, err := s.Next(100 * time.Millisecond)
			if err == ssetest.ErrTimeout && time.Now().Before(deadline) {
				finished = isDone(done)
				continue
			}
			if err != nil {
				t.Fatalf("after %d events: %v", len(got), err)
			}
			if f.Kind == ssetest.KindEvent {
				if f.Type == "reset" {
					t.Fatalf("unexpected reset after %d events", len(got))
				}
				got = append(got, f.LastID)
				gotData = append(gotData, f.Data)
				n++
			}
			finished = isDone(done)
		}
		lastID := s.LastID()
		s.Close()
		reconnects++
		reconnected.Store(int64(reconnects))
		s = open(http.Header{"Last-Event-ID": {lastID}})
	}
	// the last resumption: everything that is left
	want := pub.on("ra", "rb")
	for len(got) < len(want) {
		f, err := s.NextEvent(wait)
		if err != nil {
			d := firstDiff(got, want)
			t.Fatalf("got %d of %d events; first difference at %d: got %v want %v", len(got), len(want),
				d, got[max(0, d-3):min(len(got), d+3)], want[max(0, d-3):min(len(want), d+3)])
		}
		got = append(got, f.LastID)
		gotData = append(gotData, f.Data)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("received %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	for i, id := range got {
		if pub.data[id] != gotData[i] {
			t.Fatalf("event %s: data %q, want %q", id, gotData[i], pub.data[id])
		}
	}
	if len(want) < 5*quota || reconnects < minReconnects {
		t.Fatalf("only %d events over %d reconnections", len(want), reconnects)
	}
	t.Logf("%d events over %d reconnections", len(want), reconnects)
}

func isDone(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestResumeFromQueryParameters(t *testing.T) {
	startCaddy(t, "", basicSite)
	first := publishTo(t, "first", "q")
	publishTo(t, "second", "q")
	for _, param := range []string{"last_event_id", "lastEventID"} {
		s := openStream(t, ssetest.NewClient(), "/events?topic=q&"+param+"="+url.QueryEscape(first.ID), nil)
		if f := nextEvent(t, s); f.Data != "second" {
			t.Errorf("%s: got %q", param, f.Data)
		}
	}
	// the header wins over the query
	s := openStream(t, ssetest.NewClient(), "/events?topic=q&last_event_id=garbage", http.Header{"Last-Event-ID": {first.ID}})
	if f := nextEvent(t, s); f.Data != "second" || f.Type != "message" {
		t.Errorf("header over query: got %s %q", f.Type, f.Data)
	}
}

func TestResetCases(t *testing.T) {
	startCaddy(t, `sse {
		hub small {
			history 3
		}
	}`, `sse /events {
		hub small
	}
	sse /custom {
		hub small
		reset_event history-lost
	}
	sse /noreset {
		hub small
		reset_event off
	}
	sse /capped {
		hub small
		buffer 2
	}
	sse_publish /publish {
		hub small
	}`)
	var ids []string
	for i := range 6 {
		ids = append(ids, publishTo(t, fmt.Sprint(i), "rs").ID)
	}
	epoch, _, _ := transport.ParseID(ids[0])
	other := "00000000"
	if epoch == other {
		other = "00000001"
	}
	cases := []struct{ name, id string }{
		{"evicted", ids[1]},
		{"malformed", "not an id"},
		{"unknown", epoch + "-999999"},
		{"other incarnation", other + "-3"},
		{"non-UTF-8", "\xff\xfe"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openStream(t, ssetest.NewClient(), "/events?topic=rs", http.Header{"Last-Event-ID": {c.id}})
			f := nextEvent(t, s)
			if f.Type != "reset" {
				t.Fatalf("first event %s %q, want reset", f.Type, f.Data)
			}
			var d struct {
				LastEventID string `json:"last_event_id"`
			}
			if err := json.Unmarshal([]byte(f.Data), &d); err != nil || d.LastEventID != strings.ToValidUTF8(c.id, "\uFFFD\uFFFD") {
				t.Fatalf("reset data %q (%v)", f.Data, err)
			}
			for i := 3; i < 6; i++ {
				if f := nextEvent(t, s); f.Data != fmt.Sprint(i) || f.LastID != ids[i] {
					t.Fatalf("retained event %d: %q %s", i, f.Data, f.LastID)
				}
			}
		})
	}
	t.Run("retained id resumes without reset", func(t *testing.T) {
		s := openStream(t, ssetest.NewClient(), "/events?topic=rs", http.Header{"Last-Event-ID": {ids[3]}})
		if f := nextEvent(t, s); f.Type != "message" || f.Data != "4" {
			t.Fatalf("got %s %q", f.Type, f.Data)
		}
	})
	t.Run("a reset sends at most buffer events, the newest", func(t *testing.T) {
		s := openStream(t, ssetest.NewClient(), "/capped?topic=rs", http.Header{"Last-Event-ID": {"bad"}})
		if f := nextEvent(t, s); f.Type != "reset" {
			t.Fatalf("got %s %q", f.Type, f.Data)
		}
		for i := 4; i < 6; i++ {
			if f := nextEvent(t, s); f.LastID != ids[i] {
				t.Fatalf("event after the reset: %q %s, want %s", f.Data, f.LastID, ids[i])
			}
		}
		// a resumption that can be served is served whole, beyond buffer
		s = openStream(t, ssetest.NewClient(), "/capped?topic=rs", http.Header{"Last-Event-ID": {ids[2]}})
		for i := 3; i < 6; i++ {
			if f := nextEvent(t, s); f.LastID != ids[i] {
				t.Fatalf("resumed event: %q %s, want %s", f.Data, f.LastID, ids[i])
			}
		}
	})
	t.Run("custom reset event", func(t *testing.T) {
		s := openStream(t, ssetest.NewClient(), "/custom?topic=rs", http.Header{"Last-Event-ID": {"bad"}})
		if f := nextEvent(t, s); f.Type != "history-lost" {
			t.Fatalf("got %s %q", f.Type, f.Data)
		}
	})
	t.Run("reset off", func(t *testing.T) {
		s := openStream(t, ssetest.NewClient(), "/noreset?topic=rs", http.Header{"Last-Event-ID": {"bad"}})
		if f := nextEvent(t, s); f.Type != "message" || f.Data != "3" {
			t.Fatalf("got %s %q", f.Type, f.Data)
		}
	})
	t.Run("reset without retained events sets a position", func(t *testing.T) {
		s := openStream(t, ssetest.NewClient(), "/events?topic=empty", http.Header{"Last-Event-ID": {"bad"}})
		if f := nextEvent(t, s); f.Type != "reset" {
			t.Fatalf("got %s %q", f.Type, f.Data)
		}
		f, err := s.Next(wait)
		if err != nil || f.Kind != ssetest.KindID || seqOf(f.LastID) != seqOf(ids[5]) {
			t.Fatalf("after the reset: %+v %v", f, err)
		}
		// resuming from that position loses nothing
		s.Close()
		r := publishTo(t, "after", "empty")
		s = openStream(t, ssetest.NewClient(), "/events?topic=empty", http.Header{"Last-Event-ID": {f.LastID}})
		if f := nextEvent(t, s); f.Type != "message" || f.LastID != r.ID {
			t.Fatalf("resumed with %s %q %s", f.Type, f.Data, f.LastID)
		}
	})
}

func TestReplayLatest(t *testing.T) {
	startCaddy(t, "", `sse /events {
		replay 3
	}
	sse_publish /publish`)
	for i := range 5 {
		publishTo(t, fmt.Sprint(i), "latest")
	}
	s := openStream(t, ssetest.NewClient(), "/events?topic=latest", nil)
	for i := 2; i < 5; i++ {
		if f := nextEvent(t, s); f.Data != fmt.Sprint(i) {
			t.Fatalf("replayed %q, want %d", f.Data, i)
		}
	}
	publishTo(t, "live", "latest")
	if f := nextEvent(t, s); f.Data != "live" {
		t.Fatalf("got %q, want live", f.Data)
	}
}

// TestClientWithoutEventsResumesFromItsConnection: a client that got no
// event before it lost its connection still resumes from where it
// connected.
func TestClientWithoutEventsResumesFromItsConnection(t *testing.T) {
	startCaddy(t, "", basicSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=quiet", nil)
	var pos string
	for pos == "" {
		f, err := s.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == ssetest.KindID {
			pos = f.LastID
		}
	}
	s.Close()
	missed := publishTo(t, "while away", "quiet")
	s = openStream(t, ssetest.NewClient(), "/events?topic=quiet", http.Header{"Last-Event-ID": {pos}})
	if f := nextEvent(t, s); f.LastID != missed.ID || f.Data != "while away" {
		t.Fatalf("got %s %q", f.LastID, f.Data)
	}
}
