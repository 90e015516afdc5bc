package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ssehub/caddy-sse/internal/shrink"
)

// watch is a topic this node follows.
type watch struct {
	refs      int       // Watch calls not yet undone
	idleSince time.Time // when refs fell to 0
	lastSeen  uint64    // seq of its newest event delivered; 0: unknown
	// confirmed: the reader got the subscribed notice of its channel
	// since it was made (see mux.add), so every event of the topic comes
	// from then on and the order check (lastSeen) holds. Before, the
	// channel may still be going away from an earlier unsubscription,
	// which loses events that no stream of this watch was promised.
	confirmed bool
}

// confirm is a subscription or unsubscription awaiting Redis's answer
// (see mux.pending).
type confirm struct {
	unsub bool
	done  chan struct{}
	err   error
}

func newConfirm(unsub bool) *confirm {
	return &confirm{unsub: unsub, done: make(chan struct{})}
}

// isDone reports whether Redis answered already.
func (c *confirm) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// watch follows topics, subscribing to the channels of the new ones, and
// returns once Redis confirmed them.
func (r *reader) watch(ctx context.Context, topics []string) error {
	return r.subscribe(ctx, "subscribing", func() []string {
		channels := make([]string, 0, len(topics))
		for _, topic := range topics {
			w := r.topics[topic]
			if w == nil {
				w = new(watch)
				r.topics[topic] = w
				shrink.Grown(r.topics, &r.topicsPeak)
			}
			w.refs++
			channels = append(channels, r.t.channel(topic))
		}
		return channels
	}, func() { r.unwatch(topics) })
}

// subscribe makes a watch: register records it (called with r.mu held,
// while the reader is up) and returns its channels, which subscribe joins
// on the node's Pub/Sub connection; it returns once Redis confirmed them.
// If that fails, undo takes the watch back, and the error says doing
// what.
func (r *reader) subscribe(ctx context.Context, doing string, register func() []string, undo func()) error {
	r.subMu.Lock()
	r.mu.Lock()
	if !r.up {
		err := r.downError()
		r.mu.Unlock()
		r.subMu.Unlock()
		return err
	}
	channels := register()
	m := r.m
	r.mu.Unlock()
	waits, err := m.add(ctx, r, channels)
	r.subMu.Unlock()
	if err == nil {
		err = awaitConfirms(ctx, waits)
	}
	if err != nil {
		undo()
		return unavailable(fmt.Errorf("%s: %w", doing, err))
	}
	return nil
}

// downError is the error of a watch while the reader is down. The caller
// holds r.mu.
func (r *reader) downError() error {
	if r.lastErr == "" {
		return unavailable(errors.New("not connected yet"))
	}
	return unavailable(errors.New(r.lastErr))
}

// unwatch undoes one watch of topics; the channels of topics nobody
// follows any more are unsubscribed after a while.
func (r *reader) unwatch(topics []string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, topic := range topics {
		w := r.topics[topic]
		if w == nil || w.refs == 0 {
			continue
		}
		w.refs--
		if w.refs == 0 {
			w.idleSince = now
		}
	}
}

// unsubscribeIdle unsubscribes the channels of topics that nobody has
// followed for longer than linger (only the hub's: another hub, or the
// other transport of this hub during a reload, may read them still).
func (r *reader) unsubscribeIdle(ctx context.Context, linger time.Duration) {
	t := r.t
	cutoff := time.Now().Add(-linger)
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	var channels []string
	for topic, w := range r.topics {
		if w.refs > 0 || w.idleSince.After(cutoff) {
			continue
		}
		delete(r.topics, topic)
		channels = append(channels, t.channel(topic))
	}
	r.topics = shrink.Map(r.topics, &r.topicsPeak)
	channels = r.idleAllChannel(channels, cutoff)
	m := r.m
	r.mu.Unlock()
	if m != nil && len(channels) > 0 {
		m.remove(ctx, r, channels)
	}
}

// followed reports whether a local subscriber follows any of topics, or
// a pattern that one of them matches.
func (r *reader) followed(topics []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.matchesPattern(topics) {
		return true
	}
	for _, topic := range topics {
		if w := r.topics[topic]; w != nil && w.refs > 0 {
			return true
		}
	}
	return false
}
