package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ssehub/caddy-sse/internal/patternset"
)

// Live events of patterns. The publish script publishes every event of
// one topic on the hub's channel B:a as well as on its topic's channel;
// the events of several topics are on B:m already, which every node
// follows. So B:a and B:m together carry every event of the hub once, in
// its one order: a node that watches patterns subscribes B:a (with its
// first pattern; it is unsubscribed a while after its last, as a topic's
// channel is) and filters the events locally with a patternset.Set. The
// server's work per event stays O(1) (one more PUBLISH, to a channel
// with few subscribers), whatever the number of patterns; a node that
// watches patterns receives every event of the hub.
//
// Such a node also still receives the copies of the events of the topics
// it watches, on their channels: the first copy of an event is handled
// (the order check of its topics, delivery), the second is ignored by
// its Seq (handle). Since B:a and B:m carry every Seq of the epoch, the
// reader checks that they come one by one while B:a is subscribed and a
// pattern is watched: a Seq skipped (an event stored but not published,
// or a node of an older version that does not publish on B:a) ends the
// streams of the watched patterns, whose clients resume from history. A
// lost connection is made up for by resyncPatterns, which reads the
// events of the matching topics that the node missed.

// patternWatch is the reader's part for patterns.
type patternWatch struct {
	// Guarded by reader.mu.
	refs      map[string]int           // WatchPatterns calls not yet undone, by pattern
	set       patternset.Set[struct{}] // the patterns of refs, for matching
	wanted    bool                     // B:a is among the hub's channels
	idleSince time.Time                // when the last pattern was unwatched

	// Owned by the reader goroutine, which learns of B:a's
	// (un)subscriptions in the order of the connection's messages.
	on   bool   // B:a is subscribed at this point of the connection
	seen uint64 // Seq of the last event of B:a or B:m while checked; 0: unknown
}

// allChannel is the hub's channel of the events of one topic (see
// above).
func (t *Transport) allChannel() string {
	return t.base + ":a"
}

// watchPatterns follows patterns, subscribing B:a if it is not, and
// returns once Redis confirmed it.
func (r *reader) watchPatterns(ctx context.Context, patterns []string) error {
	return r.subscribe(ctx, "subscribing to the hub's channel", func() []string {
		if r.pw.refs == nil {
			r.pw.refs = make(map[string]int)
		}
		for _, p := range patterns {
			r.pw.refs[p]++
			if r.pw.refs[p] == 1 {
				r.pw.set.Add(p, struct{}{})
			}
		}
		r.pw.wanted = true
		return []string{r.t.allChannel()}
	}, func() { r.unwatchPatterns(patterns) })
}

// unwatchPatterns undoes one watchPatterns of patterns; B:a is
// unsubscribed after a while without any (see idleAllChannel).
func (r *reader) unwatchPatterns(patterns []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range patterns {
		n, ok := r.pw.refs[p]
		if !ok {
			continue
		}
		if n > 1 {
			r.pw.refs[p] = n - 1
			continue
		}
		delete(r.pw.refs, p)
		r.pw.set.Remove(p, struct{}{})
	}
	if len(r.pw.refs) == 0 {
		r.pw.refs = nil // a map that grew large does not stay so
		r.pw.idleSince = time.Now()
	}
}

// idleAllChannel returns channels with B:a added when no pattern has
// been watched since cutoff: it is to be unsubscribed. The caller holds
// r.mu (and subMu).
func (r *reader) idleAllChannel(channels []string, cutoff time.Time) []string {
	if !r.pw.wanted || len(r.pw.refs) > 0 || r.pw.idleSince.After(cutoff) {
		return channels
	}
	r.pw.wanted = false
	return append(channels, r.t.allChannel())
}

// matchesPattern reports whether one of topics matches a watched
// pattern. The caller holds r.mu.
func (r *reader) matchesPattern(topics []string) bool {
	if r.pw.set.Len() == 0 {
		return false
	}
	found := false
	for _, topic := range topics {
		r.pw.set.Match(topic, func(struct{}) { found = true })
		if found {
			return true
		}
	}
	return false
}

// watchedPatterns returns the patterns watched now.
func (r *reader) watchedPatterns() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.pw.refs))
	for p := range r.pw.refs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// patternCount is the number of patterns watched now.
func (r *reader) patternCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pw.refs)
}

// allSubscribed records, from the reader goroutine, Redis's confirmation
// of B:a: from here on every event of one topic comes on it. What came
// before is not checked.
func (r *reader) allSubscribed() {
	r.pw.on, r.pw.seen = true, 0
}

// allUnsubscribed records, from the reader goroutine, Redis's
// confirmation that B:a was unsubscribed: no event comes on it after.
func (r *reader) allUnsubscribed() {
	r.pw.on, r.pw.seen = false, 0
}

// allDown records that the connection, and B:a's subscription with it,
// was lost; the next connection's confirmation tells it again.
func (r *reader) allDown() {
	r.pw.on, r.pw.seen = false, 0
}

// allGap checks the order of the events of B:a and B:m: it reports
// whether seq skipped one while a pattern is watched and B:a is
// subscribed (see above). From the reader goroutine.
func (r *reader) allGap(seq uint64) bool {
	r.mu.Lock()
	checked := r.pw.on && len(r.pw.refs) > 0
	r.mu.Unlock()
	if !checked {
		r.pw.seen = 0
		return false
	}
	prev := r.pw.seen
	if seq <= prev {
		return false
	}
	r.pw.seen = seq
	return prev != 0 && seq != prev+1
}

// resyncPatterns reads from the history the events after from (up to
// bound) of the topics that match the watched patterns, for resync. It
// returns them, the matching topics that lost events after from, and
// whether the patterns cannot be served in order at all (the walk of the
// topics stopped at its limit, or a forgotten topic may have lost
// events); an epoch other than epoch is left to the reader's checks.
func (r *reader) resyncPatterns(ctx context.Context, epoch string, from, bound uint64, patterns []string) (entries []entry, incomplete []string, cut bool, err error) {
	t := r.t
	lim := t.limits.Load()
	args := make([]any, 0, 13+len(patterns))
	args = append(args, t.base, t.candidate(), lim.TTL.Milliseconds(), "resync", epoch, from, bound, 0, 0,
		0, t.scanLimit(), 0, len(patterns))
	for _, p := range patterns {
		args = append(args, p)
	}
	res, err := patternScript.Run(ctx, t.client, t.keys, args...).StringSlice()
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the history of the patterns: %w", err)
	}
	if len(res) < 3 {
		return nil, nil, false, fmt.Errorf("reading the history of the patterns: unexpected answer %q", res)
	}
	t.used(t.candidate(), res[0])
	if res[0] != epoch || res[2] == "E" {
		return nil, nil, false, nil
	}
	status, rest, _ := strings.Cut(res[2], "\n")
	if rest != "" {
		incomplete = strings.Split(rest, "\n")
	}
	for _, p := range res[3:] {
		e, err := parseEntry(p)
		if err != nil {
			return nil, nil, false, fmt.Errorf("reading the history of the patterns: %w", err)
		}
		entries = append(entries, e)
	}
	if h, _ := strconv.ParseUint(res[1], 10, 64); h < from {
		return nil, nil, false, nil // rolled back: the topics' read sees it
	}
	return entries, incomplete, status == "C", nil
}
