package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// One Pub/Sub connection per Redis per node: the hubs of a shared client
// (clients.go) read their channels over one connection, a mux's, however
// many hubs. The mux subscribes the channels its hubs ask for, routes each
// message by its channel to the hubs that read it (one, or two while a
// reload overlaps a hub's old and new transports), PINGs the connection,
// and after a lost connection opens a new one, subscribes every channel
// again and tells every hub, which re-reads what it missed (reader.go).
//
// A hub's messages go to its reader's inbox, which the mux appends to
// without ever waiting: a hub slow to deliver delays its own events only.
// Each reader takes its inbox in order, so a hub's events keep the order
// of the connection.
//
// A client has one mux per Pub/Sub flavour (sharded or classic, as the
// hubs found when they opened; in practice one), and on a Cluster one per
// hub: go-redis opens a Pub/Sub connection to the node of the slot of its
// first channel, and a hub's channels are all in the slot of its hash tag.
//
// Redis answers (un)subscriptions in the order it got them: the mux keeps
// the confirmations it awaits in that order (pending), and writes them
// under wmu, so that an answer is matched with its request. A refused
// subscription (NOPERM) fails the confirmations of its command only: the
// connection, and the other hubs, go on.

// muxKey names one of a shared client's Pub/Sub connections.
type muxKey struct {
	sharded bool   // SSUBSCRIBE (Redis 7 and later), or SUBSCRIBE
	tag     string // on a Cluster, the hub's hash tag; "" otherwise
}

// mux is one Pub/Sub connection and the readers of the hubs that use it.
type mux struct {
	sc      *sharedClient
	key     muxKey
	timeout time.Duration
	refs    int // the readers that joined it; guarded by clients' lock

	ctx    context.Context // cancelled when the last reader leaves
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	kick   chan struct{} // a reader asks for a PING now

	wmu sync.Mutex // held while (un)subscriptions are queued and written, in one order

	mu        sync.Mutex
	ps        *goredis.PubSub // nil while disconnected
	gen       uint64          // counts the connections
	connected bool            // ps's channels were subscribed (written)
	lastErr   error           // why the connection is down
	readers   map[*reader]struct{}
	chans     map[string]*muxChan
	pending   []awaited // the answers Redis owes, in order
	cmds      uint64    // counts the (un)subscription commands

	// Owned by the run goroutine.
	pingSent time.Time
	ponged   bool
}

// muxChan is a channel the mux's readers read.
type muxChan struct {
	readers []*reader
	on      bool     // subscribed, or being subscribed, on the connection
	sub     *confirm // the confirmation of that subscription
}

// awaited is an answer to an (un)subscription that Redis owes.
type awaited struct {
	cmd     uint64 // the command it answers: an error answers all of its channels
	channel string
	c       *confirm
	by      *reader // for an unsubscription, the reader that asked for it
}

// notice is what a mux hands a reader, in the order it happened.
type notice struct {
	msg  *goredis.Message // a message of one of the reader's channels
	up   bool             // the connection is there, its channels subscribed (written)
	down error            // the connection was lost
	lost bool             // the reader fell maxBuffered messages behind: they were dropped
	// subscribed is a channel whose subscription Redis confirmed here:
	// from this point of the connection on, every message of it comes
	subscribed string
	// unsubscribed is a channel the reader left, whose unsubscription
	// Redis confirmed here: no message of it comes after
	unsubscribed string
}

// inbox is a reader's queue of notices: the mux appends to it without
// waiting, the reader takes all it holds at once.
type inbox struct {
	mu     sync.Mutex
	items  []notice
	msgs   int  // messages in items
	kicked bool // kickProbe was called
	signal chan struct{}
}

func (b *inbox) init() { b.signal = make(chan struct{}, 1) }

// push appends n. Past maxBuffered messages, those queued are dropped and
// the reader told (lost), to re-read them from the history.
func (b *inbox) push(n notice) {
	b.mu.Lock()
	if n.msg != nil {
		if b.msgs >= maxBuffered {
			b.items = slices.DeleteFunc(b.items, func(it notice) bool { return it.msg != nil })
			b.items = append(b.items, notice{lost: true})
			b.msgs = 0
		}
		b.msgs++
	}
	b.items = append(b.items, n)
	b.mu.Unlock()
	b.wake()
}

// kick asks the reader to check the hub at once.
func (b *inbox) kick() {
	b.mu.Lock()
	b.kicked = true
	b.mu.Unlock()
	b.wake()
}

func (b *inbox) wake() {
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

// take returns the notices queued, and whether a check was asked for;
// spare (emptied) becomes the queue.
func (b *inbox) take(spare []notice) ([]notice, bool) {
	clear(spare)
	b.mu.Lock()
	defer b.mu.Unlock()
	items, kicked := b.items, b.kicked
	b.items, b.msgs, b.kicked = spare[:0], 0, false
	return items, kicked
}

// joinMux returns the mux that r's hub reads on, made if the client has
// none for it yet, with r and its channels registered.
func joinMux(r *reader, channels []string) *mux {
	t := r.t
	key := muxKey{sharded: t.sharded.Load() == 1}
	if _, ok := t.client.(*goredis.ClusterClient); ok {
		key.tag = t.base
	}
	clients.Lock()
	defer clients.Unlock()
	sc := t.shared
	m := sc.muxes[key]
	if m == nil {
		m = &mux{sc: sc, key: key, timeout: t.timeout, done: make(chan struct{}), kick: make(chan struct{}, 1),
			readers: make(map[*reader]struct{}), chans: make(map[string]*muxChan)}
		m.ctx, m.cancel = context.WithCancel(context.Background())
		if sc.muxes == nil {
			sc.muxes = make(map[muxKey]*mux)
		}
		sc.muxes[key] = m
		m.attach(r, channels) // before run connects: it subscribes them
		go m.run()
	} else {
		m.attach(r, channels)
	}
	m.refs++
	return m
}

// attach registers r and its channels; r is told once the connection is
// up (now, if it is).
func (m *mux) attach(r *reader, channels []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readers[r] = struct{}{}
	for _, ch := range channels {
		m.register(r, ch)
	}
	if m.connected {
		r.in.push(notice{up: true})
	}
}

// register adds r to the readers of ch, and reports whether it was not
// one. The caller holds m.mu.
func (m *mux) register(r *reader, ch string) (*muxChan, bool) {
	c := m.chans[ch]
	if c == nil {
		c = new(muxChan)
		m.chans[ch] = c
	}
	if slices.Contains(c.readers, r) {
		return c, false
	}
	c.readers = append(c.readers, r)
	return c, true
}

// leave unregisters r, unsubscribing the channels no other reader reads;
// the last reader to leave closes the connection.
func (m *mux) leave(r *reader, channels []string) {
	clients.Lock()
	m.refs--
	last := m.refs == 0
	if last {
		delete(m.sc.muxes, m.key)
	}
	clients.Unlock()
	if last {
		m.cancel()
		m.mu.Lock()
		if m.ps != nil {
			_ = m.ps.Close() // unblocks run's read
		}
		m.mu.Unlock()
		<-m.done
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	m.remove(ctx, r, channels)
	m.mu.Lock()
	delete(m.readers, r)
	m.mu.Unlock()
}

// add registers r as a reader of channels (it is handed their messages
// from now on), subscribes those that are not, and returns the
// confirmations to await: Redis sends their messages once they are
// confirmed. A reader gets a subscribed notice for a channel, in order
// with its messages, where they start to come all: at Redis's
// confirmation, or when it joins a channel confirmed already. It fails
// while the connection is down.
func (m *mux) add(ctx context.Context, r *reader, channels []string) ([]*confirm, error) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	waits := make([]*confirm, 0, len(channels))
	var subscribe []string
	for _, ch := range channels {
		c, joined := m.register(r, ch)
		if !m.connected {
			continue
		}
		if !c.on {
			c.on, c.sub = true, newConfirm(false)
			subscribe = append(subscribe, ch)
		}
		if joined && c.sub.isDone() { // confirmed() closes it under m.mu
			r.in.push(notice{subscribed: ch})
		}
		waits = append(waits, c.sub)
	}
	if !m.connected {
		err := m.lastErr
		m.mu.Unlock()
		if err == nil {
			err = errors.New("not connected yet")
		}
		return nil, err
	}
	cmds := m.queue(subscribe, false)
	ps, gen := m.ps, m.gen
	m.mu.Unlock()
	if err := m.send(ctx, ps, gen, false, cmds); err != nil {
		return nil, err
	}
	return waits, nil
}

// remove unregisters r from channels, and unsubscribes those that no
// reader reads any more.
func (m *mux) remove(ctx context.Context, r *reader, channels []string) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	var gone []string
	for _, ch := range channels {
		c := m.chans[ch]
		if c == nil {
			continue
		}
		c.readers = slices.DeleteFunc(c.readers, func(x *reader) bool { return x == r })
		if len(c.readers) > 0 {
			continue
		}
		delete(m.chans, ch)
		if c.on {
			gone = append(gone, ch)
		}
	}
	cmds := m.queue(gone, true)
	for i := len(m.pending) - len(gone); i < len(m.pending); i++ {
		m.pending[i].by = r
	}
	ps, gen := m.ps, m.gen
	m.mu.Unlock()
	if err := m.send(ctx, ps, gen, true, cmds); err != nil {
		r.t.logger.Debug("unsubscribing", zap.String("hub", r.t.hub), zap.Error(err))
	}
}

// queue records the answers that (un)subscribing channels will bring, and
// returns the commands to write, resyncChunk channels at most each. The
// caller holds wmu and m.mu, and writes them before releasing wmu.
func (m *mux) queue(channels []string, unsub bool) [][]string {
	var cmds [][]string
	for chunk := range slices.Chunk(channels, resyncChunk) {
		m.cmds++
		for _, ch := range chunk {
			c := newConfirm(unsub)
			if !unsub {
				c = m.chans[ch].sub
			}
			m.pending = append(m.pending, awaited{cmd: m.cmds, channel: ch, c: c})
		}
		cmds = append(cmds, chunk)
	}
	return cmds
}

// send writes (un)subscriptions on ps. A failed write breaks the
// connection (if it is still gen), so that run reconnects and the readers
// re-read what they missed: go-redis would otherwise reconnect behind
// their back. The caller holds wmu.
func (m *mux) send(ctx context.Context, ps *goredis.PubSub, gen uint64, unsub bool, cmds [][]string) error {
	for _, chunk := range cmds {
		var err error
		switch {
		case m.key.sharded && unsub:
			err = ps.SUnsubscribe(ctx, chunk...)
		case m.key.sharded:
			err = ps.SSubscribe(ctx, chunk...)
		case unsub:
			err = ps.Unsubscribe(ctx, chunk...)
		default:
			err = ps.Subscribe(ctx, chunk...)
		}
		if err != nil {
			m.breakConnection(gen)
			return err
		}
	}
	return nil
}

// breakConnection closes connection gen, if it is still the current one.
func (m *mux) breakConnection(gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen && m.ps != nil {
		_ = m.ps.Close()
	}
}

// pingNow asks for a PING at once (within wakeEvery), unless one is out.
func (m *mux) pingNow() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run connects, reads, and reconnects until the last reader leaves.
func (m *mux) run() {
	defer close(m.done)
	defer func() { // a connection opened as the last reader left
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.ps != nil {
			_ = m.ps.Close()
			m.ps = nil
		}
	}()
	var backoff time.Duration
	for m.ctx.Err() == nil {
		err := m.connect()
		if err == nil {
			backoff = 0
			err = m.loop()
		}
		if m.ctx.Err() != nil {
			return
		}
		first := m.setDown(err)
		backoff = min(max(2*backoff, first), max(first, time.Second))
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// connect opens a connection and subscribes every channel of the readers,
// then tells them it is up: each awaits its confirmations and re-reads
// what it missed.
func (m *mux) connect() error {
	client := m.sc.client
	var ps *goredis.PubSub
	if m.key.sharded {
		ps = client.SSubscribe(m.ctx)
	} else {
		ps = client.Subscribe(m.ctx)
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	m.ps = ps
	m.gen++
	gen := m.gen
	byReader := make(map[*reader][]string, len(m.readers))
	for ch, c := range m.chans {
		if !c.on {
			c.on, c.sub = true, newConfirm(false)
			byReader[c.readers[0]] = append(byReader[c.readers[0]], ch)
		}
	}
	var cmds [][]string
	for _, chans := range byReader { // commands per hub: a refused one fails that hub's only
		cmds = append(cmds, m.queue(chans, false)...)
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, m.timeout)
	defer cancel()
	if err := m.send(ctx, ps, gen, false, cmds); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	// a PING at once: a connection that hangs is noticed within the timeout
	if err := ps.Ping(ctx); err != nil {
		return err
	}
	m.ponged, m.pingSent = false, time.Now()
	m.mu.Lock()
	m.connected, m.lastErr = true, nil
	for r := range m.readers {
		r.in.push(notice{up: true})
	}
	m.mu.Unlock()
	return nil
}

// loop reads the connection until it fails.
func (m *mux) loop() error {
	m.mu.Lock()
	ps := m.ps
	m.mu.Unlock()
	for {
		msg, err := ps.ReceiveTimeout(m.ctx, m.wait())
		switch {
		case err == nil, isTimeout(err):
		case isPermError(err):
			if !m.refused(err) {
				return err
			}
		default:
			return err
		}
		switch v := msg.(type) {
		case *goredis.Message:
			m.route(v)
		case *goredis.Subscription:
			if err := m.confirmed(v); err != nil {
				return err
			}
		case *goredis.Pong:
			m.ponged = true
		}
		select {
		case <-m.kick:
			if m.ponged {
				m.pingSent = time.Time{}
			}
		default:
		}
		if err := m.probe(ps); err != nil {
			return err
		}
	}
}

// wait is how long run may wait for a message: until its next wake, or
// until the answer to its PING is late.
func (m *mux) wait() time.Duration {
	d := wakeEvery
	if !m.ponged {
		d = min(d, time.Until(m.pingSent.Add(m.timeout))+time.Millisecond)
	}
	return max(d, time.Millisecond)
}

// probe checks that the connection answers: a PING every pingEvery (or
// at once when a reader asked), answered within the timeout.
func (m *mux) probe(ps *goredis.PubSub) error {
	now := time.Now()
	if !m.ponged && now.Sub(m.pingSent) > m.timeout {
		return errors.New("no answer to PING on the Pub/Sub connection")
	}
	if m.ponged && now.Sub(m.pingSent) >= pingEvery {
		ctx, cancel := context.WithTimeout(m.ctx, m.timeout)
		err := ps.Ping(ctx)
		cancel()
		if err != nil {
			return err
		}
		m.ponged, m.pingSent = false, now
	}
	return nil
}

// route hands a message to the readers of its channel.
func (m *mux) route(msg *goredis.Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.chans[msg.Channel]; c != nil {
		for _, r := range c.readers {
			r.in.push(notice{msg: msg})
		}
	}
}

// confirmed matches Redis's answer to an (un)subscription with the one
// awaited; an unsolicited one (Redis dropped a subscription, e.g. when a
// Cluster slot moved) fails the connection.
func (m *mux) confirmed(s *goredis.Subscription) error {
	unsub := s.Kind == "unsubscribe" || s.Kind == "sunsubscribe"
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 || m.pending[0].channel != s.Channel || m.pending[0].c.unsub != unsub {
		return fmt.Errorf("unexpected %s of %s", s.Kind, s.Channel)
	}
	close(m.pending[0].c.done)
	if by := m.pending[0].by; by != nil {
		by.in.push(notice{unsubscribed: s.Channel})
	}
	m.pop()
	if c := m.chans[s.Channel]; c != nil && !unsub {
		for _, r := range c.readers {
			r.in.push(notice{subscribed: s.Channel})
		}
	}
	return nil
}

// refused fails the confirmations of the command Redis refused (the
// oldest awaited), and reports whether there was one.
func (m *mux) refused(err error) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		return false
	}
	cmd := m.pending[0].cmd
	for len(m.pending) > 0 && m.pending[0].cmd == cmd {
		a := m.pending[0]
		if c := m.chans[a.channel]; c != nil && c.sub == a.c {
			c.on, c.sub = false, nil
		}
		a.c.err = err
		close(a.c.done)
		m.pop()
	}
	return true
}

// pop drops the oldest awaited answer. The caller holds m.mu.
func (m *mux) pop() {
	m.pending[0] = awaited{}
	m.pending = m.pending[1:]
	if len(m.pending) == 0 {
		m.pending = nil
	}
}

// setDown closes the connection, fails the confirmations awaited and
// tells every reader; it returns the first wait before reconnecting (the
// longest its readers' transports ask for).
func (m *mux) setDown(err error) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ps != nil {
		_ = m.ps.Close()
		m.ps = nil
	}
	m.connected, m.lastErr = false, err
	for _, a := range m.pending {
		a.c.err = err
		close(a.c.done)
	}
	m.pending = nil
	for _, c := range m.chans {
		c.on, c.sub = false, nil
	}
	first := 50 * time.Millisecond
	for r := range m.readers {
		first = max(first, r.t.retryAfter)
		r.in.push(notice{down: err})
	}
	return first
}
