package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// Publish implements transport.Transport: one script stores the
// messages, publishes them on their topics' channels and records the
// idempotency key. It is sent once (no automatic retries), in one script
// call with the concurrent publishes of this node (see batcher). A
// receipt's Subscribers are the local subscribers the event was queued
// for on this node: Publish waits, within the timeout, for this node's
// reader to deliver the events whose topics are watched here.
func (t *Transport) Publish(ctx context.Context, req transport.PublishRequest) ([]transport.Receipt, error) {
	if t.closed.Load() {
		return nil, transport.ErrClosed
	}
	if len(req.Messages) == 0 {
		return nil, nil
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	cmd, err := t.publishCommand(ctx)
	if err != nil {
		return nil, err
	}
	c := newPubCall(ctx, cmd, req)
	t.waits.begin()
	defer t.waits.end()
	t.publish(c)
	if err := publishError(c); err != nil {
		if c.err != nil {
			t.rd.kickProbe() // Redis may hang: the reader checks its connection now
		}
		return nil, err
	}
	t.wantJanitor() // new keys to give an expiry, an event that will expire
	receipts, newest, recorded := parseReceipts(req, c.answers)
	if newest > 0 {
		t.rd.notePublished(c.epoch, newest)
		t.countLocal(ctx, c.epoch, receipts, req.Messages)
	}
	if recorded {
		t.recordSubscribers(ctx, req, c.answers, receipts)
	}
	return receipts, nil
}

// newPubCall returns the call of req, with its part of the publish
// script's arguments: key, fingerprint, offset, the number of messages,
// then per message its topics' count, its size without the id, its body
// and its topics.
func newPubCall(ctx context.Context, cmd string, req transport.PublishRequest) *pubCall {
	topics := 0
	for i := range req.Messages {
		topics += len(req.Messages[i].Topics)
	}
	args := make([]any, 0, 4+3*len(req.Messages)+topics)
	args = append(args, req.Key, req.Fingerprint, req.Offset, len(req.Messages))
	size := 0
	for i := range req.Messages {
		m := &req.Messages[i]
		body := transport.AppendEvent(nil, "", m.Type, m.Retry, m.Data)
		args = append(args, len(m.Topics), sizeWithoutID(m, len(body)), body)
		size += len(body)
		for _, topic := range m.Topics {
			args = append(args, topic)
			size += len(topic)
		}
	}
	return &pubCall{ctx: ctx, cmd: cmd, args: args, nmsg: len(req.Messages), ntopics: topics, bytes: size,
		done: make(chan struct{}), lead: make(chan struct{}, 1)}
}

// publishError returns the error of a publish call that was answered, or
// nil if it succeeded.
func publishError(c *pubCall) error {
	if c.err != nil {
		var (
			reply goredis.Error
			op    *net.OpError
		)
		dialing := errors.As(c.err, &op) && op.Op == "dial"
		if c.sent && !dialing && !errors.As(c.err, &reply) {
			// no answer: the script may have run
			return unavailable(fmt.Errorf("publishing: %w: %w", c.err, errMaybePublished))
		}
		return redisError(fmt.Errorf("publishing: %w", c.err))
	}
	switch c.status {
	case "ok":
		return nil
	case "mismatch":
		return transport.ErrKeyMismatch
	case "noperm":
		// refused before anything was stored or published
		return unavailable(fmt.Errorf("publishing: the redis user may not run %s (ACL); nothing was published", c.refused))
	}
	return fmt.Errorf("publishing: unexpected answer from redis: %q", c.status)
}

// parseReceipts returns the receipts of req's messages from the script's
// answers, the newest seq of the new events (0: none), and whether any
// was recorded under the idempotency key.
func parseReceipts(req transport.PublishRequest, answers []string) (receipts []transport.Receipt, newest uint64, recorded bool) {
	receipts = make([]transport.Receipt, len(req.Messages))
	for i, r := range answers {
		rc := &receipts[i]
		rc.Topics = cloneTopics(req.Messages[i].Topics)
		switch r[0] {
		case 'r':
			id, subs, _ := strings.Cut(r[1:], " ")
			rc.ID, rc.Repeated = id, true
			rc.Subscribers, _ = strconv.Atoi(subs)
			continue
		case 'k':
			recorded = true
		}
		rc.ID = r[1:]
		if _, seq, ok := transport.ParseID(rc.ID); ok {
			newest = max(newest, seq)
		}
	}
	return receipts, newest, recorded
}

// multiChannel is the Pub/Sub channel of the events of several topics,
// published once for the hub rather than once per topic (see
// publishScript): every node follows it, and delivers those of its
// events that its subscribers follow.
func (t *Transport) multiChannel() string {
	return t.base + ":m"
}

// errMaybePublished ends the error of a publish that Redis did not answer
// in time, or whose answer was lost: it may have been stored and
// published, and a retry without the same Idempotency-Key would publish
// it twice.
var errMaybePublished = transport.ErrMaybePublished

// recordSubscribers records the local subscriber counts of the events
// recorded under an idempotency key, at its first positions (see
// transport.IdempotencyCountedPositions), so that a repeat is answered as
// the first publish was. A count that cannot be recorded is answered as 0.
func (t *Transport) recordSubscribers(ctx context.Context, req transport.PublishRequest, answers []string, receipts []transport.Receipt) {
	var args []any
	for i, a := range answers {
		pos := req.Offset + i
		if pos >= transport.IdempotencyCountedPositions {
			break
		}
		if a[0] != 'k' || receipts[i].Subscribers == 0 {
			continue
		}
		if args == nil {
			args = []any{t.base, req.Key, req.Fingerprint, t.limits.Load().IdempotencyBudget()}
		}
		args = append(args, pos, receipts[i].Subscribers)
	}
	if args == nil {
		return
	}
	if err := countScript.Run(ctx, t.client, t.keys, args...).Err(); err != nil {
		t.logger.Debug("recording subscriber counts under an idempotency key", zap.Error(err))
	}
}

// cloneTopics copies topic names, so that a receipt does not share the
// request's memory.
func cloneTopics(topics []string) []string {
	out := make([]string, len(topics))
	for i, name := range topics {
		out[i] = strings.Clone(name)
	}
	return out
}

// countLocal fills in the receipts' local subscriber counts, waiting for
// the reader to deliver the events whose topics are watched on this node.
// An event it does not see delivered in time counts 0 subscribers.
func (t *Transport) countLocal(ctx context.Context, epoch string, receipts []transport.Receipt, msgs []transport.Message) {
	for i := range receipts {
		rc := &receipts[i]
		if rc.Repeated || !t.rd.followed(msgs[i].Topics) {
			continue
		}
		_, seq, _ := transport.ParseID(rc.ID)
		rc.Subscribers = t.waits.wait(ctx, &t.rd, epoch, seq)
	}
}

// candidate returns the epoch a script starts when the hub has none. A new
// one is drawn once a script has used it, so that two losses of the
// history never give the same epoch.
func (t *Transport) candidate() string {
	if c := t.cand.Load(); c != nil {
		return *c
	}
	c := transport.NewEpoch()
	t.cand.CompareAndSwap(nil, &c)
	return *t.cand.Load()
}

// used notes the epoch a script answered with.
func (t *Transport) used(cand, epoch string) {
	if cand != epoch {
		return
	}
	c := transport.NewEpoch()
	old := t.cand.Load()
	if old != nil && *old == cand {
		t.cand.CompareAndSwap(old, &c)
	}
}

// waitRing is how many recent deliveries the reader remembers for
// publishes waiting to learn their subscriber counts.
const waitRing = 4096

// deliveryWaits hands the reader's subscriber counts to the publishes that
// wait for them. While no publish waits, the reader only reads an atomic.
type deliveryWaits struct {
	pending atomic.Int32
	mu      sync.Mutex
	ring    [waitRing]struct {
		seq uint64
		n   int
	}
	signal chan struct{} // closed and replaced at each recorded delivery
}

func (w *deliveryWaits) init() {
	w.signal = make(chan struct{})
}

// begin announces a publish that may wait; it comes before the script,
// so that the reader records the deliveries the publish may look for.
func (w *deliveryWaits) begin() { w.pending.Add(1) }

func (w *deliveryWaits) end() { w.pending.Add(-1) }

// record notes that the event at seq was queued for n subscribers.
func (w *deliveryWaits) record(seq uint64, n int) {
	if w.pending.Load() == 0 {
		return
	}
	w.mu.Lock()
	slot := &w.ring[seq%waitRing]
	slot.seq, slot.n = seq, n
	close(w.signal)
	w.signal = make(chan struct{})
	w.mu.Unlock()
}

// wait returns the subscriber count of the event at seq of epoch, once the
// reader delivered it, or 0 when it will not learn it in time.
func (w *deliveryWaits) wait(ctx context.Context, rd *reader, epoch string, seq uint64) int {
	for {
		w.mu.Lock()
		slot := w.ring[seq%waitRing]
		sig := w.signal
		w.mu.Unlock()
		if slot.seq == seq {
			return slot.n
		}
		e, delivered, up := rd.progress()
		if !up || e != epoch || delivered >= seq {
			return 0
		}
		select {
		case <-sig:
		case <-ctx.Done():
			return 0
		}
	}
}
