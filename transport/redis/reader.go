package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// Timing of the reader.
const (
	// probeEvery is how often the reader checks its connection (a PING on
	// it) and the hub's epoch and seq in Redis.
	probeEvery = time.Second
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

	mu      sync.Mutex
	ps      *goredis.PubSub // nil while disconnected
	up      bool
	firstUp chan struct{} // closed once the reader is first up
	lastErr string        // the last error that made the reader go down
	failed  bool          // down since that error
	topics  map[string]*watch
	expect  map[string][]*confirm // per channel, the confirmations awaited, in order
	resyncs map[string]uint64
	kick    chan struct{}

	// The reader's place in the hub's sequence, written by the reader
	// goroutine, read by publishes.
	posMu     sync.Mutex
	epoch     string
	delivered uint64 // every event of the watched topics up to it was delivered
	published uint64 // the newest seq this node published in epoch

	// Owned by the reader goroutine.
	retired  []string // epochs the hub left: their late messages are ignored
	pingSent time.Time
	ponged   bool
	probed   time.Time
}

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
	sharded := t.sharded.Load() == 1
	var ps *goredis.PubSub
	if sharded {
		ps = t.client.SSubscribe(t.ctx)
	} else {
		ps = t.client.Subscribe(t.ctx)
	}
	r.mu.Lock()
	r.ps = ps
	channels := make([]string, 0, len(r.topics)+1)
	channels = append(channels, t.base+":ctl")
	r.expect[t.base+":ctl"] = []*confirm{newConfirm(false)}
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
	var held []string
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
			held = append(held, m.Payload)
		case *goredis.Subscription:
			if err := r.confirmed(m); err != nil {
				return err
			}
		}
	}
	if err := r.resync(ctx); err != nil {
		return err
	}
	for _, p := range held {
		r.handle(p)
	}
	r.ponged, r.pingSent, r.probed = true, time.Time{}, time.Now()
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
		msg, err := ps.ReceiveTimeout(r.t.ctx, probeEvery)
		if err != nil && !isTimeout(err) {
			return err
		}
		switch m := msg.(type) {
		case *goredis.Message:
			r.handle(m.Payload)
		case *goredis.Subscription:
			if err := r.confirmed(m); err != nil {
				return err
			}
		case *goredis.Pong:
			r.ponged = true
		}
		select {
		case <-r.kick:
			r.probed = time.Time{}
		default:
		}
		if time.Since(r.probed) >= probeEvery {
			if err := r.probe(ps); err != nil {
				return err
			}
		}
	}
}

// probe checks that the connection answers and that the hub's epoch and
// seq in Redis are those the reader knows.
func (r *reader) probe(ps *goredis.PubSub) error {
	t := r.t
	r.probed = time.Now()
	if !r.ponged && time.Since(r.pingSent) > t.timeout {
		return errors.New("no answer to PING on the Pub/Sub connection")
	}
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	if r.ponged {
		if err := ps.Ping(ctx); err != nil {
			return err
		}
		r.ponged, r.pingSent = false, time.Now()
	}
	epoch, delivered, _ := r.progress()
	res, err := t.state(ctx, epoch, delivered)
	if err != nil {
		return err
	}
	if res[0] != epoch {
		seq, _ := strconv.ParseUint(res[1], 10, 64)
		r.newEpoch(res[0], seq)
	}
	return nil
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
	r.mu.Lock()
	for i, topic := range e.topics {
		w := r.topics[topic]
		if w == nil {
			continue
		}
		if w.lastSeen != 0 && e.prevs[i] != w.lastSeen {
			gaps = append(gaps, topic)
		}
		w.lastSeen = e.seq
	}
	r.mu.Unlock()
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
		args := make([]any, 0, 8+len(chunk))
		args = append(args, t.base, t.candidate(), lim.TTL.Milliseconds(), "resync", epoch, from, head, 0)
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
	return nil
}

// rolledBack starts a new epoch: the hub's seq in Redis went below what
// this node delivered (a failover lost the newest writes), so its ids
// would be given again to other events.
func (r *reader) rolledBack(ctx context.Context, epoch string, seen uint64) error {
	t := r.t
	res, err := t.state(ctx, epoch, seen)
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

// kickProbe asks the reader to probe at once.
func (r *reader) kickProbe() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// state reports the reader's part of the transport's state.
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
	return r.up, r.lastErr, watched, lingering, resyncs
}

// isTimeout reports whether err is a read timing out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
