package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

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
// the topics, a page of it when q.MaxBytes is set, and the head it covers.
func (t *Transport) Replay(ctx context.Context, q transport.ReplayQuery) (transport.Replay, error) {
	res, err := t.readHistory(ctx, func(ctx context.Context) ([]string, error) { return t.readReplay(ctx, q) })
	if err != nil {
		return transport.Replay{}, err
	}
	return t.replayOf(res, q.MaxBytes)
}

// readHistory runs read, which runs one of the read scripts, within the
// transport's timeout once the reader is up (it tells what the node
// missed), and returns the script's answer.
func (t *Transport) readHistory(ctx context.Context, read func(context.Context) ([]string, error)) ([]string, error) {
	if t.closed.Load() {
		return nil, transport.ErrClosed
	}
	if _, _, up := t.rd.progress(); !up {
		t.rd.mu.Lock()
		err := t.rd.downError()
		t.rd.mu.Unlock()
		return nil, err
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	return read(ctx)
}

// replayOf builds the replay of a read script's answer, {epoch, head,
// status, entries...}, as a page of maxBytes.
func (t *Transport) replayOf(res []string, maxBytes int) (transport.Replay, error) {
	head, err := strconv.ParseUint(res[1], 10, 64)
	if err != nil {
		return transport.Replay{}, fmt.Errorf("reading the history: bad head %q", res[1])
	}
	rep := transport.Replay{
		Reset:  strings.Contains(res[2], "R"),
		More:   strings.Contains(res[2], "M"),
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
	events, cut := firstPage(events, maxBytes)
	rep.More = rep.More || cut
	if len(events) > 0 {
		rep.Events = events
	}
	if epoch, _, _ := t.rd.progress(); epoch != res[0] {
		t.rd.kickProbe() // the hub's epoch changed: let the reader see it now
	}
	return rep, nil
}

// readReplay runs the read script for q and returns its answer:
// {epoch, head, status, entries...} (see readScript).
func (t *Transport) readReplay(ctx context.Context, q transport.ReplayQuery) ([]string, error) {
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
	args := make([]any, 0, 9+len(q.Topics))
	args = append(args, t.base, cand, lim.TTL.Milliseconds(), mode, epoch, after, 0,
		max(q.ResetLatest, 0), max(q.MaxBytes, 0))
	for _, topic := range q.Topics {
		args = append(args, topic)
	}
	res, err := readScript.Run(ctx, t.client, t.keys, args...).StringSlice()
	if err != nil {
		return nil, redisError(fmt.Errorf("reading the history: %w", err))
	}
	if len(res) < 3 {
		return nil, fmt.Errorf("reading the history: unexpected answer from redis: %q", res)
	}
	t.used(cand, res[0])
	return res, nil
}

// firstPage returns the oldest of events whose wire bytes together are at
// most maxBytes (at least one; 0: all of them), and whether it left any
// out. The script already bounds its answer so; this holds the page to
// the contract whatever it returned.
func firstPage(events []*transport.Event, maxBytes int) ([]*transport.Event, bool) {
	if maxBytes <= 0 {
		return events, false
	}
	size := 0
	for i, ev := range events {
		size += len(ev.Wire)
		if i > 0 && size > maxBytes {
			return events[:i], true
		}
	}
	return events, false
}
