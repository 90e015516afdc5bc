package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/internal/shrink"
)

// watch is a topic this node follows.
type watch struct {
	refs      int       // Watch calls not yet undone
	idleSince time.Time // when refs fell to 0
	lastSeen  uint64    // seq of its newest event delivered; 0: unknown
	sub       *confirm  // its subscription on the current connection
}

// confirm is a subscription or unsubscription awaiting Redis's answer.
type confirm struct {
	unsub bool
	done  chan struct{}
	err   error
}

func newConfirm(unsub bool) *confirm {
	return &confirm{unsub: unsub, done: make(chan struct{})}
}

// confirmed matches Redis's answer to a subscription or unsubscription
// with the one awaited; an unsolicited one (Redis dropped a subscription,
// e.g. when a Cluster slot moved) fails the connection.
func (r *reader) confirmed(m *goredis.Subscription) error {
	unsub := m.Kind == "unsubscribe" || m.Kind == "sunsubscribe"
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.expect[m.Channel]
	if len(q) == 0 || q[0].unsub != unsub {
		return fmt.Errorf("unexpected %s of %s", m.Kind, m.Channel)
	}
	close(q[0].done)
	if len(q) == 1 {
		delete(r.expect, m.Channel)
	} else {
		r.expect[m.Channel] = q[1:]
	}
	return nil
}

// watch follows topics, subscribing to the channels of the new ones, and
// returns once Redis confirmed them.
func (r *reader) watch(ctx context.Context, topics []string) error {
	t := r.t
	r.mu.Lock()
	if !r.up {
		err := r.downError()
		r.mu.Unlock()
		return err
	}
	var (
		subscribe []string
		waits     []*confirm
	)
	for _, topic := range topics {
		w := r.topics[topic]
		if w == nil {
			w = new(watch)
			r.topics[topic] = w
			shrink.Grown(r.topics, &r.topicsPeak)
		}
		if w.sub == nil {
			ch := t.channel(topic)
			w.sub = newConfirm(false)
			r.expect[ch] = append(r.expect[ch], w.sub)
			subscribe = append(subscribe, ch)
		}
		waits = append(waits, w.sub)
		w.refs++
	}
	var err error
	if len(subscribe) > 0 {
		if t.sharded.Load() == 1 {
			err = r.ps.SSubscribe(ctx, subscribe...)
		} else {
			err = r.ps.Subscribe(ctx, subscribe...)
		}
		if err != nil {
			r.breakConnection()
		}
	}
	r.mu.Unlock()
	if err != nil {
		r.unwatch(topics)
		return unavailable(fmt.Errorf("subscribing: %w", err))
	}
	for _, c := range waits {
		select {
		case <-c.done:
			if c.err != nil {
				r.unwatch(topics)
				return unavailable(c.err)
			}
		case <-ctx.Done():
			r.unwatch(topics)
			return unavailable(fmt.Errorf("subscribing: %w", ctx.Err()))
		}
	}
	return nil
}

// downError is the error of a watch while the reader is down.
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
// followed for longer than linger.
func (r *reader) unsubscribeIdle(ctx context.Context, linger time.Duration) {
	t := r.t
	cutoff := time.Now().Add(-linger)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		return // a connection being set up subscribes what it finds
	}
	var channels []string
	for topic, w := range r.topics {
		if w.refs > 0 || w.idleSince.After(cutoff) {
			continue
		}
		delete(r.topics, topic)
		ch := t.channel(topic)
		r.expect[ch] = append(r.expect[ch], newConfirm(true))
		channels = append(channels, ch)
	}
	r.topics = shrink.Map(r.topics, &r.topicsPeak)
	if len(channels) == 0 {
		return
	}
	var err error
	if t.sharded.Load() == 1 {
		err = r.ps.SUnsubscribe(ctx, channels...)
	} else {
		err = r.ps.Unsubscribe(ctx, channels...)
	}
	if err != nil {
		r.t.logger.Debug("unsubscribing idle topics", zap.Error(err))
		r.breakConnection()
	}
}

// breakConnection closes the Pub/Sub connection after a failed write on
// it, so that the reader reconnects and re-reads what it missed: go-redis
// would otherwise reconnect behind its back and lose the messages of the
// meantime. The caller holds r.mu.
func (r *reader) breakConnection() {
	if r.ps != nil {
		_ = r.ps.Close()
	}
}

// followed reports whether a local subscriber follows any of topics.
func (r *reader) followed(topics []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, topic := range topics {
		if w := r.topics[topic]; w != nil && w.refs > 0 {
			return true
		}
	}
	return false
}
