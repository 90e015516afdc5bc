package redis

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// pageBytes is the page size of the tests, the hub's own.
const pageBytes = 64 << 10

// kib is the data of an event whose stream form takes about 1 KiB.
var kib = strings.Repeat("x", 998)

// publishMany publishes count events of data, event i to topics(i), in
// batches, and returns their ids.
func publishMany(t *testing.T, n *node, count int, data string, topics func(int) []string) []string {
	t.Helper()
	ids := make([]string, 0, count)
	for from := 0; from < count; from += 200 {
		msgs := make([]transport.Message, 0, 200)
		for i := from; i < min(from+200, count); i++ {
			msgs = append(msgs, transport.Message{Topics: topics(i), Data: data, Retry: -1})
		}
		rs, err := n.Publish(context.Background(), transport.PublishRequest{Messages: msgs})
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// scriptReply runs the read script for q as Replay does and returns how
// many entries it answered and the bytes of their stream forms: what a
// replay costs this process before it is cut to a page, if it is.
func scriptReply(t *testing.T, n *node, q transport.ReplayQuery) (entries, bytes int) {
	t.Helper()
	res, err := n.readReplay(context.Background(), q)
	if err != nil {
		t.Fatalf("read script: %v", err)
	}
	for _, p := range res[3:] {
		e, err := parseEntry(p)
		if err != nil {
			t.Fatal(err)
		}
		bytes += len(e.event().Wire)
	}
	return len(res) - 3, bytes
}

// wireBytes returns the bytes of the events' stream forms.
func wireBytes(evs []*transport.Event) int {
	n := 0
	for _, ev := range evs {
		n += len(ev.Wire)
	}
	return n
}

// checkPage checks that the first page of q is what the script answered,
// at most q.MaxBytes, and as full as the next event allows; it returns it.
func checkPage(t *testing.T, n *node, what string, q transport.ReplayQuery) transport.Replay {
	t.Helper()
	entries, bytes := scriptReply(t, n, q)
	r := n.replay(t, q)
	size := wireBytes(r.Events)
	t.Logf("%s: the script answered %d entries of %d bytes; the page holds %d events of %d bytes, More %v",
		what, entries, bytes, len(r.Events), size, r.More)
	if bytes > q.MaxBytes {
		t.Errorf("%s: the script answered %d bytes, over the page's %d", what, bytes, q.MaxBytes)
	}
	if entries != len(r.Events) || bytes != size {
		t.Errorf("%s: the script answered %d entries of %d bytes, the page holds %d of %d: it was cut in Go",
			what, entries, bytes, len(r.Events), size)
	}
	if len(r.Events) < 60 || len(r.Events) > 64 || !r.More {
		t.Fatalf("%s: a page of %d events of about 1 KiB, More %v; want about %d and More",
			what, len(r.Events), r.More, q.MaxBytes>>10)
	}
	next := n.replay(t, transport.ReplayQuery{Topics: q.Topics, Resume: true, LastEventID: r.Events[len(r.Events)-1].ID, MaxBytes: q.MaxBytes})
	if len(next.Events) == 0 || next.Reset {
		t.Fatalf("%s: the page after it has %d events, Reset %v", what, len(next.Events), next.Reset)
	}
	if w := len(next.Events[0].Wire); size+w <= q.MaxBytes {
		t.Errorf("%s: the page of %d bytes left out the next event, of %d bytes, though it fit", what, size, w)
	}
	return r
}

// readAllPages reads the replay of q in pages of q.MaxBytes, each
// resuming from the last event of the one before, and returns the Seqs
// of its events and the number of pages. Only the first page may be a
// reset, and is when reset is set.
func readAllPages(t *testing.T, n *node, what string, q transport.ReplayQuery, reset bool) ([]uint64, int) {
	t.Helper()
	var got []uint64
	for page := 1; ; page++ {
		r := n.replay(t, q)
		if r.Reset != (reset && page == 1) {
			t.Fatalf("%s: page %d has Reset %v", what, page, r.Reset)
		}
		if size := wireBytes(r.Events); len(r.Events) > 1 && size > q.MaxBytes {
			t.Fatalf("%s: page %d holds %d bytes, over %d", what, page, size, q.MaxBytes)
		}
		got = append(got, eventSeqs(r.Events)...)
		if !r.More {
			return got, page
		}
		if len(r.Events) == 0 {
			t.Fatalf("%s: page %d is empty and has More", what, page)
		}
		q = transport.ReplayQuery{Topics: q.Topics, Resume: true, LastEventID: r.Events[len(r.Events)-1].ID, MaxBytes: q.MaxBytes}
	}
}

// TestReplayPageIsBounded: a replay read in pages costs a page, in the
// script's answer as in the events returned, however long the replay and
// however many topics it merges; and its pages together are the replay.
func TestReplayPageIsBounded(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)

	t.Run("one topic of 2000 events", func(t *testing.T) {
		n := openNode(t, sharedRedis, uniquePrefix(t, sharedRedis), "h", transport.Limits{Events: 5000, MaxBytes: 1 << 30})
		ids := publishMany(t, n, 2000, kib, func(int) []string { return []string{"a"} })
		q := transport.ReplayQuery{Topics: []string{"a"}, Resume: true, LastEventID: ids[0], MaxBytes: pageBytes}
		if entries, bytes := scriptReply(t, n, transport.ReplayQuery{Topics: q.Topics, Resume: true, LastEventID: ids[0]}); entries != 1999 {
			t.Fatalf("the whole replay: %d entries of %d bytes, want 1999", entries, bytes)
		}
		checkPage(t, n, "resumed from the oldest id", q)
		got, pages := readAllPages(t, n, "resumed from the oldest id", q, false)
		if want := span(2, 2000); !slices.Equal(got, want) {
			t.Fatalf("the pages gave %d events %v..., want Seqs 2 to 2000", len(got), got[:min(len(got), 5)])
		}
		if pages > 33 {
			t.Errorf("%d pages of 64 KiB for 2 MiB", pages)
		}
		checkPage(t, n, "newest 1000", transport.ReplayQuery{Topics: q.Topics, Latest: 1000, MaxBytes: pageBytes})
	})

	t.Run("64 topics", func(t *testing.T) {
		n := openNode(t, sharedRedis, uniquePrefix(t, sharedRedis), "h", transport.Limits{Events: 100, MaxBytes: 1 << 30})
		topics := make([]string, 64)
		for i := range topics {
			topics[i] = fmt.Sprintf("t%02d", i)
		}
		start := n.replay(t, transport.ReplayQuery{Topics: topics}).HeadID
		// round robin, every 7th event to two topics: about 125 events a
		// topic, of which each keeps 100
		publishMany(t, n, 7000, kib, func(i int) []string {
			if i%7 == 0 {
				return []string{topics[i%64], topics[(i+1)%64]}
			}
			return []string{topics[i%64]}
		})
		queries := []struct {
			name string
			q    transport.ReplayQuery
		}{
			{"reset", transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: "bogus", MaxBytes: pageBytes}},
			{"resumed from the start", transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: start, MaxBytes: pageBytes}},
			{"newest 3000", transport.ReplayQuery{Topics: topics, Latest: 3000, MaxBytes: pageBytes}},
		}
		for _, c := range queries {
			first := checkPage(t, n, c.name, c.q)
			if first.Reset != c.q.Resume {
				t.Errorf("%s: Reset %v; the topics lost events after every id", c.name, first.Reset)
			}
			whole := c.q
			whole.MaxBytes = 0
			want := eventSeqs(n.replay(t, whole).Events)
			if len(want) < 3000 {
				t.Fatalf("%s: the whole replay has %d events; the test needs more", c.name, len(want))
			}
			got, pages := readAllPages(t, n, c.name, c.q, first.Reset)
			if !slices.Equal(got, want) {
				t.Errorf("%s: the pages gave %d events, the whole replay %d", c.name, len(got), len(want))
			}
			if limit := len(want)/60 + 1; pages > limit {
				t.Errorf("%s: %d pages for %d events of 1 KiB, want at most %d", c.name, pages, len(want), limit)
			}
		}
	})

	t.Run("a busy topic among quiet ones", func(t *testing.T) {
		n := openNode(t, sharedRedis, uniquePrefix(t, sharedRedis), "h", transport.Limits{Events: 5000, MaxBytes: 1 << 30})
		topics := []string{"busy"}
		for i := range 63 {
			topics = append(topics, fmt.Sprintf("quiet%02d", i))
		}
		start := n.replay(t, transport.ReplayQuery{Topics: topics}).HeadID
		publishMany(t, n, 2000, kib, func(i int) []string {
			if i%100 == 50 {
				return []string{topics[1+i/100]}
			}
			return []string{"busy"}
		})
		q := transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: start, MaxBytes: pageBytes}
		checkPage(t, n, "resumed from the start", q)
	})
}

// span returns the Seqs from to to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}
