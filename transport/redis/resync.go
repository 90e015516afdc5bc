package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"go.uber.org/zap"
)

// newEpoch moves the reader to another epoch of the hub, whose events up
// to seq it will not deliver: the history it knew is gone, so every stream
// ends, and their clients get a reset.
func (r *reader) newEpoch(epoch string, seq uint64) {
	r.posMu.Lock()
	old := r.epoch
	r.epoch, r.delivered, r.published = epoch, seq, 0
	r.posMu.Unlock()
	r.mu.Lock()
	for _, w := range r.topics {
		w.lastSeen = 0
	}
	r.mu.Unlock()
	r.pw.seen = 0
	if old == "" {
		return // the reader's first connection: nothing was delivered
	}
	r.retired = append(r.retired, old)
	if len(r.retired) > 8 {
		r.retired = r.retired[1:]
	}
	r.t.logger.Warn("the hub's history in redis was lost or rolled back: a new epoch starts, every stream ends",
		zap.String("hub", r.t.hub), zap.String("old_epoch", old), zap.String("epoch", epoch))
	r.interrupt(nil, reasonEpoch)
}

// resync reads from the history what the followed topics got after the
// last delivered event, delivers it and moves the reader to the head of
// the read. Topics whose missed events are no longer all retained have
// their streams ended.
func (r *reader) resync(ctx context.Context) error {
	t := r.t
	epoch, from, _ := r.progress()
	r.mu.Lock()
	topics := make([]string, 0, len(r.topics))
	for topic := range r.topics {
		topics = append(topics, topic)
	}
	r.mu.Unlock()
	lim := t.limits.Load()
	var (
		head       uint64
		entries    []entry
		incomplete []string
	)
	for i := 0; i == 0 || i < len(topics); i += resyncChunk {
		chunk := topics[i:min(i+resyncChunk, len(topics))]
		args := make([]any, 0, 9+len(chunk))
		args = append(args, t.base, t.candidate(), lim.TTL.Milliseconds(), "resync", epoch, from, head, 0, 0)
		for _, topic := range chunk {
			args = append(args, topic)
		}
		res, err := readScript.Run(ctx, t.client, t.keys, args...).StringSlice()
		if err != nil {
			return fmt.Errorf("reading the history: %w", err)
		}
		if len(res) < 3 {
			return fmt.Errorf("reading the history: unexpected answer %q", res)
		}
		t.used(t.candidate(), res[0])
		h, _ := strconv.ParseUint(res[1], 10, 64)
		if i == 0 {
			head = h
		}
		switch {
		case res[0] == epoch && h < from:
			return r.rolledBack(ctx, epoch, from)
		case res[0] != epoch:
			r.newEpoch(res[0], h)
			return nil
		}
		for j, f := range []byte(res[2]) {
			if f == '0' {
				incomplete = append(incomplete, chunk[j])
			}
		}
		for _, p := range res[3:] {
			e, err := parseEntry(p)
			if err != nil {
				return fmt.Errorf("reading the history: %w", err)
			}
			entries = append(entries, e)
		}
	}
	if patterns := r.watchedPatterns(); len(patterns) > 0 && epoch != "" {
		more, lost, cut, err := r.resyncPatterns(ctx, epoch, from, head, patterns)
		if err != nil {
			return err
		}
		entries = append(entries, more...)
		incomplete = append(incomplete, lost...)
		if cut {
			r.interrupt(patterns, reasonGap)
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmpSeq(a.seq, b.seq) })
	entries = slices.CompactFunc(entries, func(a, b entry) bool { return a.seq == b.seq })
	if epoch != "" && (head > from || len(incomplete) > 0) {
		r.mu.Lock()
		r.resyncs[reasonReconnect]++
		r.mu.Unlock()
	}
	if len(incomplete) > 0 {
		r.interrupt(incomplete, reasonGap)
	}
	r.mu.Lock()
	for _, topic := range incomplete {
		if w := r.topics[topic]; w != nil {
			w.lastSeen = 0
		}
	}
	for i := range entries {
		for _, topic := range entries[i].topics {
			if w := r.topics[topic]; w != nil {
				w.lastSeen = entries[i].seq
			}
		}
	}
	r.mu.Unlock()
	for i := range entries {
		r.deliver(&entries[i])
	}
	r.posMu.Lock()
	r.delivered = max(r.delivered, head)
	r.posMu.Unlock()
	r.pw.seen = head // B:a and B:m were subscribed before head was read
	return nil
}

// rolledBack starts a new epoch: the hub's seq in Redis went below what
// this node delivered (a failover lost the newest writes), so its ids
// would be given again to other events.
func (r *reader) rolledBack(ctx context.Context, epoch string, seen uint64) error {
	t := r.t
	res, err := t.state(ctx, epoch, seen, stateProbe)
	if err != nil {
		return fmt.Errorf("starting a new epoch: %w", err)
	}
	seq, _ := strconv.ParseUint(res[1], 10, 64)
	r.newEpoch(res[0], seq)
	return nil
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
