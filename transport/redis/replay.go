package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/ssehub/caddy-sse/transport"
)

// Watch implements transport.Transport: it subscribes this node to the
// channels of topics not yet followed and returns once Redis confirmed.
func (t *Transport) Watch(ctx context.Context, topics []string) error {
	if t.closed.Load() {
		return transport.ErrClosed
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	return t.rd.watch(ctx, topics)
}

// Unwatch implements transport.Transport.
func (t *Transport) Unwatch(topics []string) {
	t.rd.unwatch(topics)
}

// Replay implements transport.Transport: one script reads the history of
// the topics and the head it covers.
func (t *Transport) Replay(ctx context.Context, q transport.ReplayQuery) (transport.Replay, error) {
	if t.closed.Load() {
		return transport.Replay{}, transport.ErrClosed
	}
	if _, _, up := t.rd.progress(); !up {
		t.rd.mu.Lock()
		err := t.rd.downError()
		t.rd.mu.Unlock()
		return transport.Replay{}, err
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	lim := t.limits.Load()
	mode, epoch, after := "latest", "", uint64(0)
	switch {
	case q.Resume:
		mode = "since"
		if e, seq, ok := transport.ParseID(q.LastEventID); ok {
			epoch, after = e, seq
		}
	case q.Latest > 0:
		after = uint64(q.Latest)
	}
	cand := t.candidate()
	args := make([]any, 0, 8+len(q.Topics))
	args = append(args, t.base, cand, lim.TTL.Milliseconds(), mode, epoch, after, 0, max(q.ResetLatest, 0))
	for _, topic := range q.Topics {
		args = append(args, topic)
	}
	res, err := readScript.Run(ctx, t.client, t.keys, args...).StringSlice()
	if err != nil {
		return transport.Replay{}, redisError(fmt.Errorf("reading the history: %w", err))
	}
	if len(res) < 3 {
		return transport.Replay{}, fmt.Errorf("reading the history: unexpected answer from redis: %q", res)
	}
	t.used(cand, res[0])
	head, err := strconv.ParseUint(res[1], 10, 64)
	if err != nil {
		return transport.Replay{}, fmt.Errorf("reading the history: bad head %q", res[1])
	}
	rep := transport.Replay{
		Reset:  res[2] == "R",
		Head:   head,
		HeadID: transport.FormatID(res[0], head),
	}
	events := make([]*transport.Event, 0, len(res)-3)
	for _, p := range res[3:] {
		e, err := parseEntry(p)
		if err != nil {
			return transport.Replay{}, fmt.Errorf("reading the history: %w", err)
		}
		events = append(events, e.event())
	}
	slices.SortFunc(events, func(a, b *transport.Event) int { return cmpSeq(a.Seq, b.Seq) })
	events = slices.CompactFunc(events, func(a, b *transport.Event) bool { return a.Seq == b.Seq })
	n := 0
	switch {
	case rep.Reset:
		n = q.ResetLatest
	case !q.Resume:
		n = q.Latest
	}
	if n > 0 && len(events) > n {
		events = events[len(events)-n:]
	}
	if len(events) > 0 {
		rep.Events = events
	}
	if epoch, _, _ := t.rd.progress(); epoch != res[0] {
		t.rd.kickProbe() // the hub's epoch changed: let the reader see it now
	}
	return rep, nil
}
