package redis

import (
	"context"
	"fmt"
	"strings"

	"github.com/ssehub/caddy-sse/transport"
)

// patternScanLimit is how many topics a pattern replay or resynchronisation
// looks at, at most: found by name for patterns with a literal part, and
// walking the hub's topics by their newest event for the others (see
// patternScript). Beyond, the replay starts after the newest event of the
// topics the walk did not look at, and a resumption is a reset. It bounds
// the work of a wide pattern ("**", "*/x") on a hub of many topics to
// about 5 ms of Redis's time (BenchmarkPatternReplayWide: about 1 µs a
// topic looked at).
const patternScanLimit = 5_000

// WatchPatterns implements transport.PatternTransport: the node
// subscribes to the hub's channel of every event (see patternlive.go),
// and returns once Redis confirmed it.
func (t *Transport) WatchPatterns(ctx context.Context, patterns []string) error {
	if t.closed.Load() {
		return transport.ErrClosed
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	return t.rd.watchPatterns(ctx, patterns)
}

// UnwatchPatterns implements transport.PatternTransport.
func (t *Transport) UnwatchPatterns(patterns []string) {
	t.rd.unwatchPatterns(patterns)
}

// ReplayPatterns implements transport.PatternTransport: one script finds
// the matching topics among those published to since the replay's start
// (see patternScript) and reads their history, a page of it when
// q.MaxBytes is set, and the head it covers.
func (t *Transport) ReplayPatterns(ctx context.Context, q transport.PatternQuery) (transport.Replay, error) {
	res, err := t.readHistory(ctx, func(ctx context.Context) ([]string, error) { return t.readPatterns(ctx, q) })
	if err != nil {
		return transport.Replay{}, err
	}
	rep, err := t.replayOf(res, q.MaxBytes)
	if err != nil {
		return transport.Replay{}, err
	}
	rep.TopicsCapped = strings.Contains(res[2], "C")
	return rep, nil
}

// readPatterns runs the pattern script for q and returns its answer:
// {epoch, head, status, entries...}.
func (t *Transport) readPatterns(ctx context.Context, q transport.PatternQuery) ([]string, error) {
	lim := t.limits.Load()
	mode, epoch, after := "latest", "", uint64(0)
	if q.Resume {
		if e, seq, ok := transport.ParseID(q.LastEventID); ok {
			epoch, after = e, seq
		}
	}
	switch {
	case q.LatestPerTopic > 0:
		mode = "per"
	case q.Resume:
		mode = "since"
	case q.Latest > 0:
		after = uint64(q.Latest)
	}
	cand := t.candidate()
	args := make([]any, 0, 13+len(q.Patterns)+len(q.Topics))
	args = append(args, t.base, cand, lim.TTL.Milliseconds(), mode, epoch, after, 0,
		max(q.ResetLatest, 0), max(q.MaxBytes, 0), max(q.MaxTopics, 0), t.scanLimit(),
		max(q.LatestPerTopic, 0), len(q.Patterns))
	for _, p := range q.Patterns {
		args = append(args, p)
	}
	for _, topic := range q.Topics {
		args = append(args, topic)
	}
	res, err := patternScript.Run(ctx, t.client, t.keys, args...).StringSlice()
	if err != nil {
		return nil, redisError(fmt.Errorf("reading the history of patterns: %w", err))
	}
	if len(res) < 3 {
		return nil, fmt.Errorf("reading the history of patterns: unexpected answer from redis: %q", res)
	}
	t.used(cand, res[0])
	return res, nil
}

// scanLimit is the most topics a pattern replay looks at.
func (t *Transport) scanLimit() int {
	if t.patternScan > 0 {
		return t.patternScan
	}
	return patternScanLimit
}

// Interface guards
var _ transport.PatternTransport = (*Transport)(nil)
