package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// Timing of the reader. An idle hub costs Redis a PING every pingEvery
// and a script of a few reads every checkEvery, which writes nothing.
const (
	// pingEvery is how often the reader checks its connection with a
	// PING on it: a connection that died without closing (a hung server,
	// a lost network) is noticed within pingEvery and the timeout, or
	// sooner when a command of the hub fails (kickProbe). A closed one is
	// noticed at once.
	pingEvery = 10 * time.Second
	// checkEvery is how often the reader checks the hub's epoch and seq
	// in Redis, for a history lost (flushed, or deleted) or rolled back
	// without the connection breaking.
	checkEvery = 5 * time.Second
	// runCheckEvery is how often that check also reads the server's run
	// id (INFO), for a restart or failover that the connection outlived:
	// otherwise one breaks it, and the reader's resynchronisation reads
	// it (see ensure in scripts.go).
	runCheckEvery = 30 * time.Second
	// wakeEvery is how often the reader wakes while nothing arrives, to
	// see whether a check is due: it costs Redis nothing.
	wakeEvery = time.Second
	// linger is how long a topic no local subscriber follows stays
	// subscribed, so that clients that reconnect do not make the node
	// unsubscribe and subscribe again.
	linger = 10 * time.Second
	// resyncChunk is how many topics one history read covers.
	resyncChunk = 1000
	// maxBuffered bounds the live messages held while a connection
	// resynchronises.
	maxBuffered = 100_000
)

// Reasons for resynchronisations, in State.Resyncs and the metrics.
const (
	reasonReconnect = "reconnect" // the connection was lost: missed events re-read
	reasonGap       = "gap"       // events of a topic could not be delivered in order
	reasonEpoch     = "epoch"     // the history was lost: every stream ends
)

// reader receives a hub's events on one Pub/Sub connection, so that they
// arrive in the order the scripts published them, and hands them to the
// sink in id order, each once. A topic's channel is subscribed when a local
// subscriber first follows it, and unsubscribed a while after the last
// one left. After a lost connection the reader subscribes again, reads
// what it missed from the history, delivers it, then goes on with the
// live messages.
type reader struct {
	t *Transport

	mu         sync.Mutex
	ps         *goredis.PubSub // nil while disconnected
	up         bool
	firstUp    chan struct{} // closed once the reader is first up
	lastErr    string        // the last error that made the reader go down
	failed     bool          // down since that error
	topics     map[string]*watch
	topicsPeak int                   // the most topics since topics was last rebuilt (shrink.Map)
	expect     map[string][]*confirm // per channel, the confirmations awaited, in order
	resyncs    map[string]uint64
	kick       chan struct{}

	// The reader's place in the hub's sequence, written by the reader
	// goroutine, read by publishes.
	posMu     sync.Mutex
	epoch     string
	delivered uint64 // every event of the watched topics up to it was delivered
	published uint64 // the newest seq this node published in epoch

	// Whether the server loses no write in a restart: "1", "0", or ""
	// while unknown (see checkDurable).
	durable atomic.Value

	// Owned by the reader goroutine.
	retired    []string // epochs the hub left: their late messages are ignored
	pingSent   time.Time
	ponged     bool
	checked    time.Time // the last check of the epoch and seq
	runChecked time.Time // the last one that read the run id
}

func (r *reader) init(t *Transport) {
	r.t = t
	r.firstUp = make(chan struct{})
	r.topics = make(map[string]*watch)
	r.expect = make(map[string][]*confirm)
	r.resyncs = make(map[string]uint64)
	r.kick = make(chan struct{}, 1)
}

// run connects, reads, and reconnects until the transport closes.
func (r *reader) run() {
	defer r.t.wg.Done()
	first := r.t.retryAfter
	if first == 0 {
		first = 50 * time.Millisecond
	}
	backoff := first
	for r.t.ctx.Err() == nil {
		err := r.connect()
		if err == nil {
			backoff = first
			err = r.loop()
		}
		if r.t.ctx.Err() != nil {
			r.setDown(transport.ErrClosed)
			return
		}
		r.setDown(err)
		select {
		case <-r.t.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, max(first, time.Second))
	}
}

// connect opens a Pub/Sub connection, subscribes to the channels of every
// followed topic, resynchronises and goes up.
func (r *reader) connect() error {
	t := r.t
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	if err := t.hello(ctx); err != nil {
		return err
	}
	r.checkDurable(ctx)
	sharded := t.sharded.Load() == 1
	var ps *goredis.PubSub
	if sharded {
		ps = t.client.SSubscribe(t.ctx)
	} else {
		ps = t.client.Subscribe(t.ctx)
	}
	r.mu.Lock()
	r.ps = ps
	channels := make([]string, 0, len(r.topics)+2)
	channels = append(channels, t.controlChannel(), t.multiChannel())
	r.expect[t.controlChannel()] = []*confirm{newConfirm(false)}
	r.expect[t.multiChannel()] = []*confirm{newConfirm(false)}
	for topic, w := range r.topics {
		ch := t.channel(topic)
		channels = append(channels, ch)
		w.sub = newConfirm(false)
		r.expect[ch] = append(r.expect[ch], w.sub)
	}
	r.mu.Unlock()
	for chunk := range slices.Chunk(channels, resyncChunk) {
		var err error
		if sharded {
			err = ps.SSubscribe(ctx, chunk...)
		} else {
			err = ps.Subscribe(ctx, chunk...)
		}
		if err != nil {
			return fmt.Errorf("subscribing: %w", err)
		}
	}
	// Await every confirmation, holding the messages that come meanwhile.
	var held []*goredis.Message
	for r.awaited() > 0 {
		msg, err := ps.ReceiveTimeout(ctx, t.timeout)
		if err != nil {
			return fmt.Errorf("subscribing: %w", err)
		}
		switch m := msg.(type) {
		case *goredis.Message:
			if len(held) >= maxBuffered {
				return errors.New("too many messages while subscribing")
			}
			held = append(held, m)
		case *goredis.Subscription:
			if err := r.confirmed(m); err != nil {
				return err
			}
		}
	}
	if err := r.resync(ctx); err != nil {
		return err
	}
	for _, m := range held {
		r.receive(m)
	}
	// the connection and the hub's state were just checked (and the run id
	// read, by checkDurable and the resynchronisation)
	now := time.Now()
	r.ponged, r.pingSent, r.checked, r.runChecked = true, now, now, now
	r.mu.Lock()
	r.up = true
	if r.failed {
		r.t.logger.Info("the redis connection is back", zap.String("hub", r.t.hub), zap.String("address", t.address()))
	}
	r.failed = false
	r.mu.Unlock()
	select {
	case <-r.firstUp:
	default:
		close(r.firstUp)
	}
	return nil
}

// awaited counts the confirmations not yet received.
func (r *reader) awaited() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.expect {
		n += len(q)
	}
	return n
}

// loop reads the connection until it fails.
func (r *reader) loop() error {
	r.mu.Lock()
	ps := r.ps
	r.mu.Unlock()
	for {
		msg, err := ps.ReceiveTimeout(r.t.ctx, r.wait())
		if err != nil && !isTimeout(err) {
			return err
		}
		switch m := msg.(type) {
		case *goredis.Message:
			r.receive(m)
		case *goredis.Subscription:
			if err := r.confirmed(m); err != nil {
				return err
			}
		case *goredis.Pong:
			r.ponged = true
		}
		select {
		case <-r.kick: // both checks at once
			r.checked = time.Time{}
			if r.ponged {
				r.pingSent = time.Time{}
			}
		default:
		}
		if err := r.probe(ps); err != nil {
			return err
		}
	}
}

// wait is how long the reader may wait for a message: until its next
// wake, or until the answer to its PING is late.
func (r *reader) wait() time.Duration {
	d := wakeEvery
	if !r.ponged {
		d = min(d, time.Until(r.pingSent.Add(r.t.timeout))+time.Millisecond)
	}
	return max(d, time.Millisecond)
}

// probe checks, when they are due, that the connection answers (PING) and
// that the hub's epoch and seq in Redis are those the reader knows.
func (r *reader) probe(ps *goredis.PubSub) error {
	t := r.t
	now := time.Now()
	if !r.ponged && now.Sub(r.pingSent) > t.timeout {
		return errors.New("no answer to PING on the Pub/Sub connection")
	}
	if r.ponged && now.Sub(r.pingSent) >= pingEvery {
		ctx, cancel := t.withTimeout(t.ctx)
		err := ps.Ping(ctx)
		cancel()
		if err != nil {
			return err
		}
		r.ponged, r.pingSent = false, now
	}
	if now.Sub(r.checked) < checkEvery {
		return nil
	}
	r.checked = now
	mode := stateProbe
	if now.Sub(r.runChecked) >= runCheckEvery {
		mode, r.runChecked = stateRun, now
	}
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	epoch, delivered, _ := r.progress()
	res, err := t.state(ctx, epoch, delivered, mode)
	if err != nil {
		return err
	}
	if res[0] != epoch {
		seq, _ := strconv.ParseUint(res[1], 10, 64)
		r.newEpoch(res[0], seq)
	}
	return nil
}

// receive acts on one message: a control message, or an event.
func (r *reader) receive(m *goredis.Message) {
	if m.Channel == r.t.controlChannel() {
		r.control(m.Payload)
		return
	}
	r.handle(m.Payload)
}

// handle delivers one live message, unless it is a duplicate. A message of
// a new epoch ends every stream first; a topic whose previous event was
// not the one last delivered ends its streams (its clients resume from
// history): nothing is delivered out of order or skipped silently.
func (r *reader) handle(payload string) {
	e, err := parseEntry(payload)
	if err != nil {
		r.t.logger.Error("ignoring a malformed message", zap.Error(err))
		return
	}
	epoch, delivered, _ := r.progress()
	if e.epoch != epoch {
		if slices.Contains(r.retired, e.epoch) {
			return
		}
		r.newEpoch(e.epoch, 0)
		delivered = 0
	}
	if e.seq <= delivered {
		return
	}
	var gaps []string
	followed := false
	r.mu.Lock()
	for i, topic := range e.topics {
		w := r.topics[topic]
		if w == nil {
			continue
		}
		followed = true
		if w.lastSeen != 0 && e.prevs[i] != w.lastSeen {
			gaps = append(gaps, topic)
		}
		w.lastSeen = e.seq
	}
	r.mu.Unlock()
	if !followed {
		// an event of several topics (published once for the hub) that
		// this node does not follow
		return
	}
	if gaps != nil {
		r.interrupt(gaps, reasonGap)
	}
	r.deliver(&e)
}

// deliver hands one event to the sink and moves the reader past it.
func (r *reader) deliver(e *entry) {
	n := r.t.sink.Deliver(e.event())
	r.t.waits.record(e.seq, n)
	r.posMu.Lock()
	r.delivered = e.seq
	r.posMu.Unlock()
}

// interrupt ends the streams of topics (nil: all) and counts it.
func (r *reader) interrupt(topics []string, reason string) {
	r.mu.Lock()
	r.resyncs[reason]++
	r.mu.Unlock()
	r.t.sink.Interrupt(topics, reason)
}

// setDown marks the reader disconnected and fails what awaited Redis.
func (r *reader) setDown(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	closing := errors.Is(err, transport.ErrClosed)
	if !closing && !r.failed {
		r.t.logger.Warn("lost the redis connection; the hub is unavailable until it is back",
			zap.String("hub", r.t.hub), zap.String("address", r.t.address()), zap.Error(err))
	}
	r.up = false
	if err != nil && !closing {
		r.lastErr = err.Error()
		r.failed = true
	}
	for ch, q := range r.expect {
		for _, c := range q {
			c.err = err
			close(c.done)
		}
		delete(r.expect, ch)
	}
	for _, w := range r.topics {
		w.sub = nil
	}
	if r.ps != nil {
		_ = r.ps.Close()
		r.ps = nil
	}
}

// close unblocks the reader for Close.
func (r *reader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ps != nil {
		_ = r.ps.Close()
	}
}

// awaitUp waits until the reader is first up, or ctx is done.
func (r *reader) awaitUp(ctx context.Context) {
	select {
	case <-r.firstUp:
	case <-ctx.Done():
	}
}

// progress returns the reader's epoch, the seq up to which it delivered,
// and whether it is up.
func (r *reader) progress() (string, uint64, bool) {
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	r.posMu.Lock()
	defer r.posMu.Unlock()
	return r.epoch, r.delivered, up
}

// position is the newest event this node knows of: a hub whose seq is
// below it in the same epoch was rolled back.
func (r *reader) position() (string, uint64) {
	r.posMu.Lock()
	defer r.posMu.Unlock()
	return r.epoch, max(r.delivered, r.published)
}

// notePublished records the newest seq this node published.
func (r *reader) notePublished(epoch string, seq uint64) {
	r.posMu.Lock()
	defer r.posMu.Unlock()
	if epoch == r.epoch {
		r.published = max(r.published, seq)
	}
}

// kickProbe asks the reader to check its connection and the hub's epoch
// at once (within wakeEvery).
func (r *reader) kickProbe() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// state reports the reader's part of the transport's state; the last
// error only while it is down (once up again, it is history, which the
// log has).
func (r *reader) state() (up bool, lastErr string, watched, lingering int, resyncs map[string]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.topics {
		if w.refs > 0 {
			watched++
		} else {
			lingering++
		}
	}
	if len(r.resyncs) > 0 {
		resyncs = make(map[string]uint64, len(r.resyncs))
		for k, v := range r.resyncs {
			resyncs[k] = v
		}
	}
	if !r.up {
		lastErr = r.lastErr
	}
	return r.up, lastErr, watched, lingering, resyncs
}

// isTimeout reports whether err is a read timing out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
