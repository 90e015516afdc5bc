package caddysse

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Who is there (SPEC section 11): the admin API lists a hub's topics with
// the number of this node's streams that follow each, a pattern stream
// under its pattern, and the number of distinct members of each across
// the hub's nodes (presence; members.go).

// The page sizes of GET /sse/hubs/<name>/topics.
const (
	defaultTopicsLimit = 100
	maxTopicsLimit     = 1000
)

// TopicStreams is a line of the admin API's list of a hub's topics.
type TopicStreams struct {
	// Topic is the topic, or the pattern that pattern streams follow.
	Topic string `json:"topic"`
	// Streams is the number of this node's streams that follow it.
	Streams int `json:"streams"`
	// Members is the number of distinct members present on it (routes
	// with presence), on every node of the hub; absent when none.
	Members int `json:"members,omitempty"`
}

// TopicsPage is a page of a hub's topics with streams, in name order.
type TopicsPage struct {
	// Topics are the page's topics, in name order.
	Topics []TopicStreams `json:"topics"`
	// Next is what to pass as after for the next page; "" on the last.
	Next string `json:"next"`
}

// TopicStreams returns, in name order, up to limit of the topics and
// patterns that this node's streams of the hub follow, whose names begin
// with prefix and sort after after.
func (h *Hub) TopicStreams(prefix, after string, limit int) TopicsPage {
	counts := make(map[string]int)
	h.mu.RLock()
	for _, m := range []map[string]*topicSubs{h.topics, h.patternSubs} {
		for name, ts := range m {
			if len(ts.subs) > 0 && name > after && strings.HasPrefix(name, prefix) {
				counts[name] += len(ts.subs) // a pattern may also be a literal topic of a route without patterns
			}
		}
	}
	h.mu.RUnlock()
	list := make([]TopicStreams, 0, len(counts))
	for name, n := range counts {
		list = append(list, TopicStreams{Topic: name, Streams: n})
	}
	slices.SortFunc(list, func(a, b TopicStreams) int { return strings.Compare(a.Topic, b.Topic) })
	page := TopicsPage{Topics: list}
	if len(list) > limit {
		page.Topics = list[:limit]
		page.Next = list[limit-1].Topic
	}
	return page
}

// serveHubTopics answers GET /sse/hubs/<name>/topics?prefix=&after=&limit=.
func serveHubTopics(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("the query string: %v", err))
		return
	}
	limit := defaultTopicsLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxTopicsLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want a number from 1 to %d", s, maxTopicsLimit))
			return
		}
		limit = n
	}
	hub, ok := findRunningHub(w, name)
	if !ok {
		return
	}
	page := hub.TopicStreams(q.Get("prefix"), q.Get("after"), limit)
	if err := hub.addMembers(r.Context(), &page); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// addMembers fills in the members of the page's topics, when the hub's
// transport counts them.
func (h *Hub) addMembers(ctx context.Context, page *TopicsPage) error {
	if h.pres == nil || len(page.Topics) == 0 {
		return nil
	}
	names := make([]string, len(page.Topics))
	for i, ts := range page.Topics {
		names[i] = ts.Topic
	}
	counts, err := h.pres.t.PresenceCounts(ctx, names)
	if err != nil {
		return fmt.Errorf("counting the members of hub %q: %w", h.name, err)
	}
	for i, n := range counts {
		page.Topics[i].Members = n
	}
	return nil
}
