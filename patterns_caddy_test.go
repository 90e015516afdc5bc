package caddysse

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// patternsSite has a dashboard route with patterns, replay_latest and
// allow, a pattern route capped at two topics, and a route without
// patterns.
const patternsSite = `
	sse /dash {
		patterns
		replay_latest 1
		allow orders/*
	}
	sse /events {
		patterns
	}
	sse /capped {
		patterns
		max_topics 2
	}
	sse /plain
	sse_publish /publish
`

// TestPatternsOverCaddy: over Caddy, the dashboard recipe of
// docs/reference.md sends a first connection the newest event of each
// order topic, in id order, then the live events of order topics only;
// patterns not covered by allow are refused with 403 and register
// nothing; a pattern resumption over more than max_topics topics gets a
// reset; without patterns "*" is literal.
func TestPatternsOverCaddy(t *testing.T) {
	startCaddy(t, `sse {
		hub default {
			history 1000
		}
	}`, patternsSite)
	client := ssetest.NewClient()
	var want []string
	for i := range 2 {
		a := publishTo(t, fmt.Sprint("o1-", i), "orders/1")
		b := publishTo(t, fmt.Sprint("o2-", i), "orders/2")
		publishTo(t, fmt.Sprint("n-", i), "news/1")
		if i == 1 {
			want = []string{a.ID, b.ID}
		}
	}
	dash := openStream(t, client, "/dash?topic=orders/*", nil)
	for i, id := range want {
		if f := nextEvent(t, dash); f.LastID != id {
			t.Fatalf("replayed event %d: %+v, want %s", i, f, id)
		}
	}
	publishTo(t, "news", "news/2")
	live := publishTo(t, "live", "orders/3", "news/3")
	if f := nextEvent(t, dash); f.LastID != live.ID {
		t.Fatalf("got %+v, want the live event %s", f, live.ID)
	}

	hub := findHub(t, DefaultHubName)
	before := hub.Stats().Refusals["forbidden"] // the hub outlives the configs of other tests
	for _, topic := range []string{"orders/**", "**", "*/1"} {
		if status, _, body := get(t, "/dash?topic="+url.QueryEscape(topic), nil); status != http.StatusForbidden {
			t.Errorf("pattern %s: status %d (%s), want 403", topic, status, body)
		}
	}
	if st := hub.Stats(); st.SubscribedPatterns != 1 || st.Refusals["forbidden"]-before != 3 {
		t.Errorf("after the refusals: %d patterns subscribed, %d refusals; want 1 and 3", st.SubscribedPatterns, st.Refusals["forbidden"]-before)
	}

	first := publishTo(t, "c", "c/0")
	c1 := publishTo(t, "c", "c/1")
	publishTo(t, "c", "c/2")
	publishTo(t, "c", "c/3")
	last := publishTo(t, "c", "c/3")
	capped := openStream(t, client, "/capped?topic=c/*", http.Header{"Last-Event-ID": {first.ID}})
	if f := nextEvent(t, capped); f.Type != "reset" {
		t.Fatalf("resumed over 3 topics with max_topics 2: %+v, want a reset", f)
	}
	got := readUntil(t, capped, last.ID)
	if len(got) != 3 || slices.Contains(got, c1.ID) {
		t.Fatalf("after the reset: %v, want the newest events of at most 2 topics", got)
	}

	plain := openStream(t, client, "/plain?topic="+url.QueryEscape("a/*"), nil)
	publishTo(t, "not for a/*", "a/b")
	literal := publishTo(t, "literal", "a/*")
	if f := nextEvent(t, plain); f.LastID != literal.ID {
		t.Fatalf("without patterns: got %+v, want the event of the topic a/* %s", f, literal.ID)
	}
}

// readUntil reads a stream's events up to the one with id, and returns
// their ids.
func readUntil(t *testing.T, s *ssetest.Stream, id string) []string {
	t.Helper()
	var got []string
	for {
		f := nextEvent(t, s)
		got = append(got, f.LastID)
		if f.LastID == id {
			return got
		}
	}
}

// TestPatternResumeWhilePublishing is TestResumeWhilePublishing for a
// stream of the patterns r/* and r/** over Caddy: every event of r/a and
// r/b once, in order, across its reconnections.
func TestPatternResumeWhilePublishing(t *testing.T) {
	startCaddy(t, `sse {
		hub default {
			history 100000
		}
	}`, patternsSite)
	client := ssetest.NewClient()
	rename := map[string]string{"ra": "r/a", "rb": "r/b", "rc": "x/c"}
	resumeWhilePublishing(t, func(data string, topics []string) (publishResult, error) {
		mapped := make([]string, len(topics))
		for i, tp := range topics {
			mapped[i] = rename[tp]
		}
		pr := post(t, "/publish", "application/x-www-form-urlencoded", url.Values{"topic": mapped, "data": {data}}.Encode())
		if pr.Status != http.StatusOK {
			return publishResult{}, fmt.Errorf("publish: %d %s", pr.Status, pr.Body)
		}
		return publishResult{ID: pr.Result.ID, Topics: topics}, nil
	}, func(header http.Header) *ssetest.Stream {
		return openStream(t, client, "/events?topic=r/*&topic=r/**", header)
	}, 100, 30, 3*time.Millisecond)
}
