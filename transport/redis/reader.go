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

// Timing of the reader and of the Pub/Sub connection (pubsub.go). An idle
// hub costs Redis a script of a few reads every checkEvery, which writes
// nothing; the node's Pub/Sub connection a PING every pingEvery, however
// many hubs share it.
const (
	// pingEvery is how often the mux checks its connection with a PING
	// on it: a connection that died without closing (a hung server, a
	// lost network) is noticed within pingEvery and the timeout, or
	// sooner when a command of a hub fails (kickProbe). A closed one is
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
	// wakeEvery is how often the reader and the mux wake while nothing
	// arrives, to see whether a check is due: it costs Redis nothing.
	wakeEvery = time.Second
	// linger is how long a topic no local subscriber follows stays
	// subscribed, so that clients that reconnect do not make the node
	// unsubscribe and subscribe again.
	linger = 10 * time.Second
	// resyncChunk is how many topics one history read covers.
	resyncChunk = 1000
	// maxBuffered bounds the live messages a hub holds while it
	// resynchronises, or has yet to take from the mux (past it, they are
	// dropped and re-read from the history).
	maxBuffered = 100_000
)

// Reasons for resynchronisations, in State.Resyncs and the metrics.
const (
	reasonReconnect = "reconnect" // the connection was lost: missed events re-read
	reasonGap       = "gap"       // events of a topic could not be delivered in order
	reasonEpoch     = "epoch"     // the history was lost: every stream ends
)

// reader receives a hub's events from the node's Pub/Sub connection to
// its Redis, which the hubs share (pubsub.go), and hands them to the sink
// in id order, each once: its own goroutine takes the messages of the
// hub's channels in the order the scripts published them. A topic's
// channel is subscribed when a local subscriber first follows it, and
// unsubscribed a while after the last one left. After a lost connection
// (or when its own checks fail, or it fell behind) the reader waits until
// its channels are subscribed again, reads what it missed from the
// history, delivers it, then goes on with the live messages.
type reader struct {
	t  *Transport
	in inbox // what the mux hands the reader

	subMu sync.Mutex // held while the hub's channels change on the mux

	mu         sync.Mutex
	m          *mux // the connection the hub reads on; nil until joined
	up         bool
	firstUp    chan struct{} // closed once the reader is first up
	lastErr    string        // the last error that made the reader go down
	failed     bool          // down since that error
	topics     map[string]*watch
	topicsPeak int // the most topics since topics was last rebuilt (shrink.Map)
	resyncs    map[string]uint64
	pw         patternWatch // the patterns watched (patternlive.go)

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
	retired    []string           // epochs the hub left: their late messages are ignored
	held       []*goredis.Message // live messages held until the reader is in sync
	checked    time.Time          // the last check of the epoch and seq
	runChecked time.Time          // the last one that read the run id
}

func (r *reader) init(t *Transport) {
	r.t = t
	r.in.init()
	r.firstUp = make(chan struct{})
	r.topics = make(map[string]*watch)
	r.resyncs = make(map[string]uint64)
}

// errBehind is why a reader that fell behind its messages goes down.
var errBehind = errors.New("the hub fell too far behind its Pub/Sub messages")

// run joins the node's Pub/Sub connection and serves the hub until the
// transport closes.
func (r *reader) run() {
	defer r.t.wg.Done()
	defer r.setDown(transport.ErrClosed)
	m := r.join()
	if m == nil {
		return
	}
	defer func() {
		r.subMu.Lock()
		defer r.subMu.Unlock()
		r.mu.Lock()
		channels := r.channels()
		r.m, r.up = nil, false
		r.mu.Unlock()
		m.leave(r, channels)
	}()
	r.serve()
}

// join learns the server's Pub/Sub flavour (hello), trying until Redis
// answers, then joins the connection of the node's client for it. It
// returns nil if the transport closed first.
func (r *reader) join() *mux {
	t := r.t
	b := newBackoff(t.retryAfter)
	for {
		ctx, cancel := t.withTimeout(t.ctx)
		err := t.hello(ctx)
		cancel()
		if err == nil {
			break
		}
		if t.ctx.Err() != nil {
			return nil
		}
		r.setDown(err)
		select {
		case <-t.ctx.Done():
			return nil
		case <-time.After(b.next()):
		}
	}
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	channels := r.channels()
	r.mu.Unlock()
	m := joinMux(r, channels)
	r.mu.Lock()
	r.m = m
	r.mu.Unlock()
	return m
}

// channels are the Pub/Sub channels of the hub that the reader reads. The
// caller holds r.mu.
func (r *reader) channels() []string {
	t := r.t
	channels := make([]string, 0, len(r.topics)+2)
	channels = append(channels, t.controlChannel(), t.multiChannel())
	if r.pw.wanted {
		channels = append(channels, t.allChannel())
	}
	for topic := range r.topics {
		channels = append(channels, t.channel(topic))
	}
	return channels
}

// serve takes what the mux hands the reader, in order, until the
// transport closes: it delivers the live messages while in sync, holds
// them while not, gets in sync when the connection is up, and checks the
// hub's epoch and seq when due.
func (r *reader) serve() {
	t := r.t
	st := serveState{b: newBackoff(t.retryAfter)}
	var items []notice
	timer := time.NewTimer(wakeEvery)
	defer timer.Stop()
	for {
		var kicked bool
		items, kicked = r.in.take(items)
		r.apply(&st, items)
		if kicked { // both checks at once
			r.checked = time.Time{}
			r.m.pingNow()
		}
		err := r.advance(&st)
		if t.ctx.Err() != nil {
			return
		}
		if err != nil {
			r.setDown(err)
			st.retryAt = time.Now().Add(st.b.next())
		}
		timer.Reset(st.wait())
		select {
		case <-t.ctx.Done():
			return
		case <-r.in.signal:
		case <-timer.C:
		}
	}
}

// serveState is where serve is.
type serveState struct {
	inSync    bool      // up: the live messages are delivered as they come
	connected bool      // the mux's connection is up
	retryAt   time.Time // the next attempt to get in sync, after a failed one
	b         backoff
}

// wait is how long serve may sleep: until its next wake, or its next
// attempt to get in sync.
func (st *serveState) wait() time.Duration {
	if st.inSync || !st.connected {
		return wakeEvery
	}
	return min(wakeEvery, max(time.Until(st.retryAt), time.Millisecond))
}

// apply acts on the notices of the mux, in order.
func (r *reader) apply(st *serveState, items []notice) {
	for _, n := range items {
		switch {
		case n.msg != nil && st.inSync:
			r.receive(n.msg)
		case n.msg != nil:
			r.hold(n.msg)
		case n.up: // a new connection: try at once
			st.connected, st.retryAt = true, time.Time{}
		case n.down != nil:
			st.connected, st.inSync = false, false
			r.allDown()
			r.setDown(n.down)
		case n.lost:
			st.inSync, r.held = false, nil
			r.setDown(errBehind)
		case n.subscribed == r.t.allChannel():
			r.allSubscribed()
		case n.unsubscribed == r.t.allChannel():
			r.allUnsubscribed()
		case n.subscribed != "" && st.inSync:
			// (out of sync, the resynchronisation starts afresh anyway)
			r.complete(r.t.topicOf(n.subscribed))
		}
	}
}

// advance gets the reader in sync when it is not and may, or checks the
// hub when it is; it returns why that failed.
func (r *reader) advance(st *serveState) error {
	switch {
	case !st.inSync && st.connected && !time.Now().Before(st.retryAt):
		if err := r.sync(); err != nil {
			return err
		}
		st.inSync = true
		st.b.reset()
	case st.inSync:
		if err := r.probe(); err != nil {
			st.inSync = false
			return err
		}
	}
	return nil
}

// hold keeps a live message until the reader is in sync; past
// maxBuffered, those held are dropped: the history has them.
func (r *reader) hold(m *goredis.Message) {
	if len(r.held) >= maxBuffered {
		clear(r.held)
		r.held = r.held[:0]
	}
	r.held = append(r.held, m)
}

// sync gets the reader in sync once the connection is up: it awaits the
// subscription of the hub's channels, reads from the history what it
// missed, delivers it, then the live messages held meanwhile, and goes up.
func (r *reader) sync() error {
	t := r.t
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	if err := r.subscribed(ctx); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	r.checkDurable(ctx)
	if err := r.resync(ctx); err != nil {
		return err
	}
	held := r.held
	r.held = nil
	for _, m := range held {
		r.receive(m)
	}
	// the hub's state was just checked (and the run id read, by
	// checkDurable and the resynchronisation)
	now := time.Now()
	r.checked, r.runChecked = now, now
	r.mu.Lock()
	r.up = true
	if r.failed {
		t.logger.Info("the redis connection is back", zap.String("hub", t.hub), zap.String("address", t.address()))
	}
	r.failed = false
	r.mu.Unlock()
	select {
	case <-r.firstUp:
		t.presenceMissed() // in sync again: changes may have been lost meanwhile
	default:
		close(r.firstUp)
	}
	return nil
}

// subscribed subscribes those of the hub's channels that are not (after a
// lost connection, the mux did already) and awaits Redis's confirmations.
func (r *reader) subscribed(ctx context.Context) error {
	r.subMu.Lock()
	r.mu.Lock()
	channels := r.channels()
	r.mu.Unlock()
	waits, err := r.m.add(ctx, r, channels)
	r.subMu.Unlock()
	if err != nil {
		return err
	}
	if err := awaitConfirms(ctx, waits); err != nil {
		return err
	}
	// every channel is confirmed (no watch comes while the reader is
	// down), and the resynchronisation sets the order checks
	r.mu.Lock()
	for _, w := range r.topics {
		w.confirmed = true
	}
	r.mu.Unlock()
	return nil
}

// awaitConfirms waits for confirmations, and returns the first error.
func awaitConfirms(ctx context.Context, waits []*confirm) error {
	for _, c := range waits {
		select {
		case <-c.done:
			if c.err != nil {
				return c.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// backoff is the growing wait between attempts: from first (50 ms if 0)
// to max(first, 1 s).
type backoff struct{ first, cur time.Duration }

func newBackoff(first time.Duration) backoff {
	if first == 0 {
		first = 50 * time.Millisecond
	}
	return backoff{first: first}
}

// next is the wait before the next attempt.
func (b *backoff) next() time.Duration {
	b.cur = min(max(2*b.cur, b.first), max(b.first, time.Second))
	return b.cur
}

// reset starts again from first, after a success.
func (b *backoff) reset() { b.cur = 0 }

// probe checks, when it is due, that the hub's epoch and seq in Redis
// are those the reader knows (the mux checks the connection).
func (r *reader) probe() error {
	t := r.t
	now := time.Now()
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
		r.m.pingNow() // Redis may hang: the connection is checked too
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
	switch m.Channel {
	case r.t.controlChannel():
		r.control(m.Payload)
	case r.t.allChannel():
		if m.Payload != "" { // the start check's (startcheck.go)
			r.handle(m.Payload, true)
		}
	case r.t.multiChannel():
		r.handle(m.Payload, true)
	default:
		r.handle(m.Payload, false)
	}
}

// handle delivers one live message, unless it is a duplicate. A message of
// a new epoch ends every stream first; a topic whose previous event was
// not the one last delivered ends its streams (its clients resume from
// history), and so does a Seq skipped on the hub's channels (hubWide: B:a
// and B:m) for the watched patterns' streams: nothing is delivered out of
// order or skipped silently.
func (r *reader) handle(payload string, hubWide bool) {
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
	if hubWide && r.allGap(e.seq) {
		r.interrupt(r.watchedPatterns(), reasonGap)
	}
	if e.seq <= delivered {
		return
	}
	var gaps []string
	r.mu.Lock()
	followed := r.matchesPattern(e.topics)
	for i, topic := range e.topics {
		w := r.topics[topic]
		if w == nil {
			continue
		}
		followed = true
		if w.confirmed && w.lastSeen != 0 && e.prevs[i] != w.lastSeen {
			gaps = append(gaps, topic)
		}
		w.lastSeen = e.seq
	}
	r.mu.Unlock()
	if !followed {
		// an event of several topics (published once for the hub), or
		// of the hub's channel, that this node does not follow
		return
	}
	if gaps != nil {
		r.interrupt(gaps, reasonGap)
	}
	r.deliver(&e)
}

// complete restarts the order check of topic at the confirmation of its
// channel's subscription. Before it, an event of the topic published with
// others (on the hub's channel, which the reader always follows) may have
// arrived while one of the topic alone, published between them, did not:
// the events after it would seem to skip one; and a channel re-subscribed
// while its earlier unsubscription was still on its way lost the events
// between the two. From the confirmation on, every event of the topic
// comes: the check starts (watch.confirmed).
func (r *reader) complete(topic string) {
	if topic == "" {
		return
	}
	r.mu.Lock()
	if w := r.topics[topic]; w != nil {
		w.lastSeen, w.confirmed = 0, true
	}
	r.mu.Unlock()
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

// setDown marks the reader out of service: publishes and watches fail
// until it is back in sync.
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
}

// close wakes the reader for Close (which cancelled the transport).
func (r *reader) close() {
	r.in.wake()
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

// kickProbe asks the reader to check the hub's epoch, and the mux its
// connection, at once (within wakeEvery).
func (r *reader) kickProbe() {
	r.in.kick()
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
