package memory

import (
	"cmp"
	"context"
	"slices"
	"sort"

	"github.com/ssehub/caddy-sse/transport"
)

// WatchPatterns implements transport.PatternTransport. Every event
// reaches the local hub whatever is watched (see Watch), so a pattern's
// events need nothing more; WatchPatterns only counts the patterns, for
// State.WatchedPatterns.
func (t *Transport) WatchPatterns(_ context.Context, patterns []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	countUp(t.patterns, &t.patternsPeak, patterns)
	return nil
}

// UnwatchPatterns implements transport.PatternTransport.
func (t *Transport) UnwatchPatterns(patterns []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.patterns = countDown(t.patterns, &t.patternsPeak, patterns)
}

// ReplayPatterns implements transport.PatternTransport. The topics that
// match a pattern are found in an index of the history's topics by
// segment (patternset.Index, built at the first pattern replay): a
// pattern costs the topics it reaches ("news/*" the children of "news",
// "**" every topic), not all of the hub's. Every matching topic is looked
// at (its lost events decide whether a resume can be served), but the
// merge of events takes at most MaxTopics of them.
func (t *Transport) ReplayPatterns(_ context.Context, q transport.PatternQuery) (transport.Replay, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.Replay{}, transport.ErrClosed
	}
	t.expire()
	r := transport.Replay{Head: t.seq, HeadID: t.headID}
	sel := t.selectTopics(q.Topics, q.Patterns)
	switch {
	case q.LatestPerTopic > 0:
		var after uint64
		if q.Resume {
			if seq, ok := t.seqOf(q.LastEventID); ok {
				after = seq
			}
		}
		r.Events, r.More, r.TopicsCapped = sel.latestPerTopic(q.LatestPerTopic, after, q.MaxTopics, q.MaxBytes)
		return r, nil
	case q.Resume:
		if after, ok := t.resumableSel(q.LastEventID, sel); ok {
			lists, n := sel.after(after)
			if q.MaxTopics <= 0 || len(lists) <= q.MaxTopics {
				r.Events, r.More = mergePage(lists, n, q.MaxBytes)
				return r, nil
			}
			r.TopicsCapped = true // a resumption it would take too many topics to serve
		}
		r.Reset = true
		var start uint64
		start, r.TopicsCapped = sel.newestStart(q.ResetLatest, q.MaxTopics, r.TopicsCapped)
		r.Events, r.More = mergePage(sel.afterLimited(start, q.MaxBytes))
	case q.Latest > 0:
		var start uint64
		start, r.TopicsCapped = sel.newestStart(q.Latest, q.MaxTopics, false)
		r.Events, r.More = mergePage(sel.afterLimited(start, q.MaxBytes))
	}
	return r, nil
}

// selection is the topics of a pattern query as the history knows them.
type selection struct {
	// logs are the histories of the query's topics that the history
	// knows, each once.
	logs []*topicLog
	// lost is the newest Seq that a topic of the query the history has
	// forgotten may have lost: when a topic asked for is unknown, or a
	// pattern may have matched a forgotten topic, the Seq of the newest
	// event of any forgotten topic.
	lost uint64
}

// selectTopics returns the selection of topics and of the topics of the
// history that match one of patterns.
func (t *Transport) selectTopics(topics, patterns []string) selection {
	var sel selection
	var seen map[*topicLog]bool // with patterns, a topic may be asked for twice
	if len(patterns) > 0 {
		seen = make(map[*topicLog]bool, len(topics))
		sel.lost = t.forgotten
	}
	for _, name := range topics {
		tl := t.topics[name]
		switch {
		case tl == nil:
			sel.lost = max(sel.lost, t.forgotten)
		case seen == nil:
			sel.logs = append(sel.logs, tl)
		case !seen[tl]:
			seen[tl] = true
			sel.logs = append(sel.logs, tl)
		}
	}
	if len(patterns) > 0 {
		index := t.indexed()
		for _, p := range patterns {
			index.Match(p, func(tl *topicLog) bool {
				if !seen[tl] { // a topic that several patterns match, once
					seen[tl] = true
					sel.logs = append(sel.logs, tl)
				}
				return true
			})
		}
	}
	return sel
}

// horizon returns the newest Seq after which none of the selection's
// topics has lost an event.
func (sel *selection) horizon() uint64 {
	h := sel.lost
	for _, tl := range sel.logs {
		h = max(h, tl.evicted)
	}
	return h
}

// resumableSel reports whether every event of the selection after the
// event called id is still retained, and that event's Seq.
func (t *Transport) resumableSel(id string, sel selection) (uint64, bool) {
	seq, ok := t.seqOf(id)
	if !ok || sel.horizon() > seq {
		return 0, false
	}
	return seq, true
}

// after returns, of every topic of the selection that has retained
// events after seq, the list of them, and their number together.
func (sel *selection) after(seq uint64) ([][]*record, int) {
	var lists [][]*record
	n := 0
	for _, tl := range sel.logs {
		if l := tl.after(seq); len(l) > 0 {
			lists = append(lists, l)
			n += len(l)
		}
	}
	return lists, n
}

// afterLimited is after, with the maxBytes that mergePage takes.
func (sel *selection) afterLimited(seq uint64, maxBytes int) ([][]*record, int, int) {
	lists, n := sel.after(seq)
	return lists, n, maxBytes
}

// newest returns the Seq of tl's newest retained event, or 0.
func newest(tl *topicLog) uint64 {
	if tl.len() == 0 {
		return 0
	}
	return tl.recs[len(tl.recs)-1].ev.Seq
}

// byNewest sorts logs by their newest retained event, newest first, and
// by name among equals, so that the same history gives the same order.
func byNewest(logs []*topicLog) {
	slices.SortFunc(logs, func(a, b *topicLog) int {
		if c := cmp.Compare(newest(b), newest(a)); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
}

// capStart returns the Seq after which at most maxTopics topics of the
// selection have retained events (0 when maxTopics is 0 or they are not
// more than that): the newest event of the first topic left out, when
// the topics are taken by their newest events, newest first.
func (sel *selection) capStart(maxTopics int) uint64 {
	if maxTopics <= 0 || len(sel.logs) <= maxTopics {
		return 0
	}
	tops := make([]uint64, 0, len(sel.logs))
	for _, tl := range sel.logs {
		if s := newest(tl); s > 0 {
			tops = append(tops, s)
		}
	}
	if len(tops) <= maxTopics {
		return 0
	}
	slices.SortFunc(tops, func(a, b uint64) int { return cmp.Compare(b, a) })
	return tops[maxTopics]
}

// newestStart returns the Seq after which the events of a reset (or a
// replay of the newest events) of the selection begin: after the newest
// event any of its topics lost, so that what follows is whole; after the
// newest event of the first topic beyond maxTopics (see capStart); and
// for n > 0, where the newest n of the rest begin. It reports whether the
// cap left events out (or capped already was).
func (sel *selection) newestStart(n, maxTopics int, capped bool) (uint64, bool) {
	h, c := sel.horizon(), sel.capStart(maxTopics)
	start := max(h, c)
	l := uint64(0)
	if n > 0 {
		var logs []*topicLog
		for _, tl := range sel.logs {
			if newest(tl) > start {
				logs = append(logs, tl)
			}
		}
		l = latestStartOf(logs, n)
	}
	return max(start, l), capped || c > max(h, l)
}

// latestPerTopic returns the newest per events of each topic of the
// selection (of the maxTopics topics published to last, when maxTopics is
// positive; it reports whether others were left out), those after seq
// after, merged into a page of maxBytes.
func (sel *selection) latestPerTopic(per int, after uint64, maxTopics, maxBytes int) ([]*transport.Event, bool, bool) {
	logs := make([]*topicLog, 0, len(sel.logs))
	for _, tl := range sel.logs {
		if tl.len() > 0 {
			logs = append(logs, tl)
		}
	}
	capped := false
	if maxTopics > 0 && len(logs) > maxTopics {
		byNewest(logs)
		logs, capped = logs[:maxTopics], true
	}
	var lists [][]*record
	n := 0
	for _, tl := range logs {
		l := tl.last(per)
		l = l[sort.Search(len(l), func(i int) bool { return l[i].ev.Seq > after }):]
		if len(l) > 0 {
			lists = append(lists, l)
			n += len(l)
		}
	}
	evs, more := mergePage(lists, n, maxBytes)
	return evs, more, capped
}
