package caddysse

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// Pattern streams (SPEC section 11, the route's patterns) and
// replay_latest, in the hub harness; patterns_caddy_test.go runs the
// main rules over Caddy.

// TestHubPatternsLive: with patterns, a stream of several overlapping
// patterns and a plain topic gets every event whose topics match one of
// them, once each, in id order (an event of two matching topics, matched
// by three patterns, once), and nothing of other topics; a stream of
// another prefix gets only its own; each event is counted once per
// subscriber.
func TestHubPatternsLive(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Patterns: true})
	all := hs.open("/events?topic=orders/*&topic=orders/**&topic=orders/1", nil)
	star := hs.open("/events?topic=orders/*", nil)
	news := hs.open("/events?topic=news/*", nil)
	hs.subscribers(3)
	if st := hs.hub.Stats(); st.SubscribedPatterns != 3 || st.SubscribedTopics != 1 {
		t.Fatalf("%d patterns and %d topics subscribed, want 3 and 1", st.SubscribedPatterns, st.SubscribedTopics)
	}

	type pub struct {
		topics          []string
		toAll, toStar   bool
		toNews, counted int
	}
	pubs := []pub{
		{topics: []string{"orders/1"}, toAll: true, toStar: true, counted: 2},
		{topics: []string{"orders/2"}, toAll: true, toStar: true, counted: 2},
		{topics: []string{"orders/1", "orders/2"}, toAll: true, toStar: true, counted: 2},
		{topics: []string{"orders/1/lines"}, toAll: true, counted: 1},
		{topics: []string{"news/1", "orders/3"}, toAll: true, toStar: true, toNews: 1, counted: 3},
		{topics: []string{"news/2"}, toNews: 1, counted: 1},
		{topics: []string{"elsewhere"}},
		{topics: []string{"orders"}},
	}
	var wantAll, wantStar, wantNews []string
	for i, p := range pubs {
		r := hs.publish(fmt.Sprint("e", i), p.topics...)
		if r.Subscribers != p.counted {
			t.Errorf("event %v queued for %d subscribers, want %d", p.topics, r.Subscribers, p.counted)
		}
		if p.toAll {
			wantAll = append(wantAll, r.ID)
		}
		if p.toStar {
			wantStar = append(wantStar, r.ID)
		}
		if p.toNews > 0 {
			wantNews = append(wantNews, r.ID)
		}
	}
	marker := hs.publish("marker", "orders/9", "news/9")
	wantAll, wantStar, wantNews = append(wantAll, marker.ID), append(wantStar, marker.ID), append(wantNews, marker.ID)
	for name, c := range map[string]struct {
		s    *ssetest.Stream
		want []string
	}{"all": {all, wantAll}, "orders/*": {star, wantStar}, "news/*": {news, wantNews}} {
		if got := readN(t, c.s, len(c.want)); !slices.Equal(got, c.want) {
			t.Errorf("stream %s got %v, want %v", name, got, c.want)
		}
	}
	star.Close()
	news.Close()
	hs.subscribers(1)
	if st := hs.hub.Stats(); st.SubscribedPatterns != 2 {
		t.Fatalf("%d patterns subscribed after their streams left, want 2", st.SubscribedPatterns)
	}
	all.Close()
	hs.subscribers(0)
	if st := hs.hub.Stats(); st.SubscribedPatterns != 0 || hs.hub.patterns.Len() != 0 {
		t.Fatalf("%d patterns left (%d in the set)", st.SubscribedPatterns, hs.hub.patterns.Len())
	}
}

// TestHubPatternsOff: without patterns, "*" is an ordinary character of
// a topic (v1): a stream of "a/*" gets the events of the topic "a/*",
// not those of "a/b".
func TestHubPatternsOff(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{})
	s := hs.open("/events?topic=a/*", nil)
	if r := hs.publish("other", "a/b"); r.Subscribers != 0 {
		t.Fatalf("an event of a/b queued for %d subscribers of the topic a/*", r.Subscribers)
	}
	literal := hs.publish("literal", "a/*")
	if f := nextEvent(t, s); f.LastID != literal.ID {
		t.Fatalf("got %+v, want the event of the topic a/* %s", f, literal.ID)
	}
	if n := hs.hub.Stats().SubscribedPatterns; n != 0 {
		t.Fatalf("%d patterns subscribed", n)
	}
}

// TestHubPatternReplaySeam is TestHubReplaySeam for a pattern stream: a
// subscriber of r/*, r/** and r/a reconnects over and over with the id
// of the last event it got while publishers publish to r/a, r/b, x/c and
// two of them at once: it gets every event of r/a and r/b exactly once,
// in order, with its data.
func TestHubPatternReplaySeam(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{Events: 100000}, &Subscribe{Patterns: true})
	rename := map[string]string{"ra": "r/a", "rb": "r/b", "rc": "x/c"}
	resumeWhilePublishing(t, func(data string, topics []string) (publishResult, error) {
		mapped := make([]string, len(topics))
		for i, t := range topics {
			mapped[i] = rename[t]
		}
		r := hs.publish(data, mapped...)
		return publishResult{ID: r.ID, Topics: topics}, nil
	}, func(header http.Header) *ssetest.Stream {
		return hs.open("/events?topic=r/*&topic=r/**&topic=r/a", header)
	}, 500, 100, time.Millisecond)
}

// TestHubPatternPausedReader: a pattern stream that stops reading while
// more than the delivery window is published catches up from the
// history, a page at a time (ReplayPatterns), with every event once, in
// order; the window's parts of the pattern are trimmed with it.
func TestHubPatternPausedReader(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{Events: 5000}, &Subscribe{Patterns: true, BufferSize: 64 << 10})
	s := hs.openWith(hs.client(4096), "/events?topic=p/*", nil)
	var msgs []transport.Message
	for i := range 96 {
		msgs = append(msgs, transport.Message{Topics: []string{fmt.Sprint("p/", i%7)}, Data: strings.Repeat("x", 64<<10), Retry: -1})
	}
	checkCaughtUpFromHistory(t, hs, s, hs.publishAll(msgs...))
	hs.hub.mu.RLock()
	ts := hs.hub.patternSubs["p/*"]
	hs.hub.backlog.mu.RLock()
	held, window := len(ts.events)-ts.head, len(hs.hub.backlog.fifo)-hs.hub.backlog.head
	hs.hub.backlog.mu.RUnlock()
	hs.hub.mu.RUnlock()
	if held > window || held > 2 {
		t.Fatalf("the pattern's part of the window holds %d events, the window %d: it was not trimmed", held, window)
	}
}

// TestHubPatternMaxTopics: a pattern stream whose resumption would merge
// the events of more topics than max_topics gets a reset and the newest
// events, of max_topics topics at most (those published to last); one
// within the bound resumes exactly.
func TestHubPatternMaxTopics(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Patterns: true, MaxTopics: 3})
	var rs []transport.Receipt
	for i := 1; i <= 5; i++ { // t/1 twice, then t/2 twice, ...
		for range 2 {
			rs = append(rs, hs.publish(fmt.Sprint("t", i), fmt.Sprint("t/", i)))
		}
	}
	s := hs.open("/events?topic=t/*", http.Header{"Last-Event-ID": {rs[0].ID}})
	if f := nextEvent(t, s); f.Type != "reset" {
		t.Fatalf("resumed over 5 topics with max_topics 3: got %+v, want a reset", f)
	}
	want := ids(rs[4:]) // the events of t/3, t/4 and t/5
	if got := readN(t, s, len(want)); !slices.Equal(got, want) {
		t.Fatalf("after the reset: %v, want %v", got, want)
	}
	live := hs.publish("live", "t/1")
	if f := nextEvent(t, s); f.LastID != live.ID {
		t.Fatalf("got %+v, want the live event %s", f, live.ID)
	}

	within := hs.open("/events?topic=t/*", http.Header{"Last-Event-ID": {rs[5].ID}}) // t/4, t/5 and t/1 since
	want = append(ids(rs[6:]), live.ID)
	got := readN(t, within, len(want))
	if !slices.Equal(got, want) {
		t.Fatalf("resumed within max_topics: %v, want %v", got, want)
	}
}

// TestHubReplayLatest: replay_latest sends a first connection the
// newest n events of each topic, of each topic its patterns match too,
// in id order and each once, then the live events; without patterns it
// does the same for plain topics; a resumption is served as usual.
func TestHubReplayLatest(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Patterns: true, ReplayLatest: 2})
	plain := harnessRoute(t, hs.hub, &Subscribe{ReplayLatest: 2})
	var rs []transport.Receipt
	for i := range 4 {
		rs = append(rs, hs.publish(fmt.Sprint("a1-", i), "a/1"))
		rs = append(rs, hs.publish(fmt.Sprint("a2-", i), "a/2"))
		rs = append(rs, hs.publish(fmt.Sprint("b-", i), "b"))
		rs = append(rs, hs.publish(fmt.Sprint("c-", i), "c"))
	}
	both := hs.publish("both", "a/1", "b") // the newest of a/1 and b: sent once
	newest := func(topics ...string) []string {
		var out []string
		count := map[string]int{}
		all := append(slices.Clone(rs), both)
		for i := len(all) - 1; i >= 0; i-- {
			take := false
			for _, tp := range all[i].Topics {
				if slices.Contains(topics, tp) && count[tp] < 2 {
					count[tp]++
					take = true
				}
			}
			if take {
				out = append(out, all[i].ID)
			}
		}
		slices.Reverse(out)
		return out
	}

	s := hs.open("/events?topic=a/*&topic=b", nil)
	want := newest("a/1", "a/2", "b")
	if got := readN(t, s, len(want)); !slices.Equal(got, want) {
		t.Fatalf("pattern stream replayed %v, want %v", got, want)
	}
	live := hs.publish("live", "a/3")
	if f := nextEvent(t, s); f.LastID != live.ID {
		t.Fatalf("got %+v after the replay, want the live event %s", f, live.ID)
	}

	p := ssetest.OpenT(t, routeClient(plain, 64<<10), "http://harness/events?topic=b&topic=c", nil)
	want = newest("b", "c")
	if got := readN(t, p, len(want)); !slices.Equal(got, want) {
		t.Fatalf("plain stream replayed %v, want %v", got, want)
	}

	resumed := hs.open("/events?topic=a/*&topic=b", http.Header{"Last-Event-ID": {rs[len(rs)-2].ID}})
	want = []string{both.ID, live.ID}
	if got := readN(t, resumed, len(want)); !slices.Equal(got, want) {
		t.Fatalf("resumed with %v, want %v", got, want)
	}
}

// TestHubReplayLatestPaged: a replay_latest of many pages, while events
// are published, reaches the live events without loss or repetition at
// its seam: ids strictly increase, the replayed events are among the
// newest of their topics, and every event published after the stream
// opened arrives.
func TestHubReplayLatestPaged(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Patterns: true, ReplayLatest: 3})
	var before []transport.Message
	for i := range 60 {
		before = append(before, transport.Message{Topics: []string{fmt.Sprint("big/", i%12)}, Data: strings.Repeat("y", 16<<10), Retry: -1})
	}
	old := ids(hs.publishAll(before...))
	latest := map[string]bool{}
	for _, id := range old[len(old)-36:] { // the newest 3 of each of the 12 topics
		latest[id] = true
	}
	s := hs.open("/events?topic=big/*", nil) // 36 events of 16 KiB: 9 pages
	var mu sync.Mutex
	var live []string
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			id := hs.publish(fmt.Sprint("live-", i), fmt.Sprint("big/", i%12)).ID
			mu.Lock()
			live = append(live, id)
			mu.Unlock()
		}
	})
	wg.Wait()
	stop := hs.publish("stop", "big/0").ID
	var got []string
	for {
		f := nextEvent(t, s)
		if f.Type == "reset" {
			t.Fatal("unexpected reset")
		}
		got = append(got, f.LastID)
		if f.LastID == stop {
			break
		}
	}
	seq := func(id string) uint64 {
		_, n, ok := transport.ParseID(id)
		if !ok {
			t.Fatalf("bad id %q", id)
		}
		return n
	}
	for i := 1; i < len(got); i++ {
		if seq(got[i]) <= seq(got[i-1]) {
			t.Fatalf("event %d (%s) after %s: not in order, or repeated", i, got[i], got[i-1])
		}
	}
	replayed := 0
	for _, id := range got {
		if seq(id) <= seq(old[len(old)-1]) {
			if !latest[id] {
				t.Fatalf("replayed %s, not among the newest 3 of its topic", id)
			}
			replayed++
		}
	}
	if replayed == 0 {
		t.Fatal("nothing replayed")
	}
	gotSet := map[string]bool{}
	for _, id := range got {
		gotSet[id] = true
	}
	for _, id := range live {
		if !gotSet[id] {
			t.Fatalf("the live event %s is missing", id)
		}
	}
	t.Logf("%d replayed, %d live", replayed, len(got)-replayed)
}

// TestHubPatternRefusals: a pattern is allowed only when allow and the
// token cover every topic it can match; else the subscription is refused
// with 403, counted, and nothing is registered.
func TestHubPatternRefusals(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Patterns: true, Allow: []string{"orders/*"}})
	tokRoute := harnessRoute(t, hs.hub, &Subscribe{Patterns: true, Token: &TokenConfig{Keys: []string{testTokenKey}, Alg: "HS256"}})
	tok := mint(t, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sse": grant([]string{"user/1/*"}, nil)})
	bearer := http.Header{"Authorization": {"Bearer " + tok}}

	status := func(client *http.Client, path string, header http.Header) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://harness"+path, nil)
		req.Header = header
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name   string
		client *http.Client
		path   string
		header http.Header
	}{
		{"allow orders/*, pattern orders/**", hs.client(4096), "/events?topic=orders/**", nil},
		{"allow orders/*, pattern **", hs.client(4096), "/events?topic=**", nil},
		{"allow orders/*, pattern */1", hs.client(4096), "/events?topic=*/1", nil},
		{"allow orders/*, a covered pattern with one that is not", hs.client(4096), "/events?topic=orders/*&topic=news/*", nil},
		{"token user/1/*, pattern user/*/x", routeClient(tokRoute, 4096), "/events?topic=user/*/x", bearer},
		{"token user/1/*, pattern user/1/**", routeClient(tokRoute, 4096), "/events?topic=user/1/**", bearer},
	} {
		if got := status(c.client, c.path, c.header); got != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", c.name, got)
		}
	}
	if n := hs.hub.counters.refusals[refusedForbidden].Load(); n != 6 {
		t.Errorf("%d forbidden refusals counted, want 6", n)
	}
	if st := hs.hub.Stats(); st.Subscribers != 0 || st.SubscribedPatterns != 0 || hs.hub.patterns.Len() != 0 {
		t.Fatalf("after refusals: %d subscribers, %d patterns", st.Subscribers, st.SubscribedPatterns)
	}

	// covered ones are served
	s := hs.open("/events?topic=orders/*", nil)
	ts := ssetest.OpenT(t, routeClient(tokRoute, 64<<10), "http://harness/events?topic=user/1/*", bearer)
	r := hs.publish("ok", "orders/1", "user/1/a")
	for _, st := range []*ssetest.Stream{s, ts} {
		if f := nextEvent(t, st); f.LastID != r.ID {
			t.Fatalf("got %+v, want %s", f, r.ID)
		}
	}
}

// TestHubPatternInterruptAndDisconnect: an interruption of a topic ends
// the pattern streams that match it and no other; an administrator's
// disconnect by topic ends a pattern stream whose pattern it covers, not
// one it merely overlaps, and one by subject ends pattern streams too.
func TestHubPatternInterruptAndDisconnect(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Patterns: true})
	orders := hs.open("/events?topic=orders/*", nil)
	news := hs.open("/events?topic=news/*", nil)
	hs.subscribers(2)
	hs.hub.Interrupt([]string{"orders/7"}, "gap")
	if _, err := orders.ReadAll(wait); err != nil {
		t.Fatalf("the stream of orders/* did not end: %v", err)
	}
	hs.subscribers(1)
	if n := hs.disconnects(endResync); n != 1 {
		t.Fatalf("%d resyncs, want 1", n)
	}
	r := hs.publish("still", "news/1")
	if f := nextEvent(t, news); f.LastID != r.ID {
		t.Fatalf("the stream of news/* got %+v, want %s", f, r.ID)
	}

	orders = hs.open("/events?topic=orders/*", nil)
	all := hs.open("/events?topic=**", nil)
	hs.subscribers(3)
	for _, d := range []transport.Disconnect{{Topic: "orders/7"}, {Topic: "orders/*/x"}, {Topic: "nothing/**"}} {
		if n := hs.hub.Disconnect(d); n != 0 {
			t.Fatalf("disconnect %+v ended %d streams, want none", d, n)
		}
	}
	if n := hs.hub.Disconnect(transport.Disconnect{Topic: "orders/**"}); n != 1 {
		t.Fatalf("disconnect orders/** ended %d streams, want the one of orders/*", n)
	}
	if _, err := orders.ReadAll(wait); err != nil {
		t.Fatalf("the stream of orders/* did not end: %v", err)
	}
	if n := hs.hub.Disconnect(transport.Disconnect{Topic: "**"}); n != 2 {
		t.Fatalf("disconnect ** ended %d streams, want 2", n)
	}
	for _, s := range []*ssetest.Stream{news, all} {
		if _, err := s.ReadAll(wait); err != nil {
			t.Fatalf("a stream did not end: %v", err)
		}
	}
	hs.subscribers(0)
}
