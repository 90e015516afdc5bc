package caddysse

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/internal/patternset"
	"github.com/ssehub/caddy-sse/internal/shrink"
	"github.com/ssehub/caddy-sse/transport"
)

// pageBytes is how much of the history a stream reads at once: a page,
// which a shared transport reads into memory of its own.
const pageBytes = 64 << 10

// errOverCapacity refuses a subscription beyond max_subscribers.
var errOverCapacity = errors.New("too many subscribers")

// Hub is a named set of topics shared by the sse and sse_publish handlers
// that name it. It keeps the local subscribers of each topic and queues
// every event its transport delivers for them; the transport keeps the
// history and carries events between nodes. A hub lives in the hubs pool
// and survives config reloads that keep its name and transport.
type Hub struct {
	name          string
	transport     transport.Transport
	transportName string
	patternT      transport.PatternTransport // the transport, when it serves patterns; else nil
	pres          *hubPresence               // who is there, when the transport counts members; else nil (members.go)
	logger        *zap.Logger

	mu         sync.RWMutex
	topics     map[string]*topicSubs
	topicsPeak int // the most topics since topics was last rebuilt (shrink.Map)
	// A pattern with local streams (SPEC section 11) is a virtual topic:
	// a topicSubs of its own, with its part of the delivery window, found
	// by pattern in patternSubs and, for the events of the topics it
	// matches, in patterns (one pair per pattern, added with its first
	// stream and removed with its last).
	patternSubs map[string]*topicSubs
	patterns    patternset.Set[*topicSubs]
	subscribers int
	gate        *wakeGate
	backlog     backlog
	gone        []*transport.Event // scratch of Deliver and Evicted, which never overlap
	slow        []*subscriber      // likewise
	held        []*topicSubs       // likewise: the parts of the window an event goes to
	matched     []*topicSubs       // likewise: the patterns matching a topic
	replaying   atomic.Int64       // streams reading their replay, behind their seam

	keysMu sync.Mutex
	keys   map[string]struct{} // idempotency keys of requests in progress

	counters     hubCounters
	slowWarnedAt atomic.Int64 // unix nanoseconds of the last slow warning
	slowUnwarned atomic.Int64 // slow drops not yet warned about
	slowWarnDue  atomic.Bool  // a warning of them is scheduled
}

// hubCounters count what happens in a hub; they only ever grow.
type hubCounters struct {
	connections atomic.Uint64
	published   atomic.Uint64
	delivered   atomic.Uint64
	replayed    atomic.Uint64
	disconnects [numEndReasons]atomic.Uint64
	refusals    [numRefusals]atomic.Uint64
}

// refusalReason says why a request was refused by a route's access control;
// they label the refusal metrics.
type refusalReason int

const (
	refusedUnauthorized refusalReason = iota // no token, or an invalid one
	refusedForbidden                         // a topic neither allow nor the token grants
	refusedExpired                           // an expired token
	numRefusals
)

// String returns the reason's label in the metrics.
func (r refusalReason) String() string {
	return [numRefusals]string{"unauthorized", "forbidden", "expired"}[r]
}

// refusedFor counts a request refused by a route's access control.
func (h *Hub) refusedFor(r refusalReason) {
	h.counters.refusals[r].Add(1)
}

// newHub opens a hub on an unopened transport.
func newHub(name string, t transport.Transport, limits transport.Limits, logger *zap.Logger) (*Hub, error) {
	h := &Hub{
		name:          name,
		transport:     t,
		transportName: transportName(t),
		logger:        logger,
		topics:        make(map[string]*topicSubs),
		patternSubs:   make(map[string]*topicSubs),
		gate:          newWakeGate(),
		keys:          make(map[string]struct{}),
	}
	h.patternT, _ = t.(transport.PatternTransport)
	h.pres = newHubPresence(t, logger)
	h.backlog.init()
	if err := t.Open(name, limits, h); err != nil {
		return nil, fmt.Errorf("opening transport of hub %q: %w", name, err)
	}
	return h, nil
}

// transportName is the name of a transport's module, as in the config.
func transportName(t transport.Transport) string {
	if m, ok := t.(caddy.Module); ok {
		return m.CaddyModule().ID.Name()
	}
	return fmt.Sprintf("%T", t)
}

// Destruct closes the hub's transport once no config uses the hub.
func (h *Hub) Destruct() error {
	if h.pres != nil {
		h.pres.close()
	}
	return h.transport.Close()
}

// Name returns the hub's name.
func (h *Hub) Name() string { return h.name }

// Publish publishes valid messages, in order, and returns once they are
// stored in the history. A caller with an idempotency key claims it
// (claimKey) for the whole request, before it reads the request's body.
func (h *Hub) Publish(ctx context.Context, req transport.PublishRequest) ([]transport.Receipt, error) {
	receipts, err := h.transport.Publish(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("publishing to hub %q: %w", h.name, err)
	}
	for _, rc := range receipts {
		if !rc.Repeated {
			h.counters.published.Add(1)
		}
	}
	return receipts, nil
}

// claimKey marks an idempotency key as in use by a request on this node,
// unless it already is; releaseKey frees it once the request is answered.
func (h *Hub) claimKey(key string) bool {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	if _, busy := h.keys[key]; busy {
		return false
	}
	h.keys[key] = struct{}{}
	return true
}

func (h *Hub) releaseKey(key string) {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	delete(h.keys, key)
}

// Deliver implements transport.Sink: it puts ev in the delivery window of
// the topics that have local subscribers and wakes those subscribers'
// writers, without waiting for any of them; it returns how many distinct
// subscribers it woke. The window is trimmed to its size: a subscriber
// that had not taken an event trimmed, which the history no longer holds
// either, is dropped as slow. The transport calls Deliver for one event
// at a time; Deliver never calls the transport.
func (h *Hub) Deliver(ev *transport.Event) int {
	h.mu.RLock()
	held := h.held[:0]
	for _, name := range ev.Topics {
		if ts := h.topics[name]; ts != nil {
			held = append(held, ts)
		}
	}
	if h.patterns.Len() > 0 {
		held = h.heldPatterns(ev, held)
	}
	h.backlog.mu.Lock()
	h.gone = h.backlog.add(ev, held, h.topics, &h.patterns, &h.matched, h.gone[:0])
	h.slow = h.behind(h.gone, h.slow[:0])
	h.backlog.mu.Unlock()
	n := 0
	multi := len(held) > 1
	for _, ts := range held {
		for _, s := range ts.subs {
			if multi {
				if s.lastSeq == ev.Seq {
					continue
				}
				s.lastSeq = ev.Seq
			}
			s.wakeUp()
			n++
		}
	}
	h.mu.RUnlock()
	clear(held)
	h.held = held[:0]
	h.dropAll()
	return n
}

// heldPatterns appends to held the patterns with local streams that match
// a topic of ev, each once (several topics of ev may match one pattern):
// a pattern's topicSubs is stamped with the Seq of the last event it was
// held for. The caller holds the hub's lock and is Deliver.
func (h *Hub) heldPatterns(ev *transport.Event, held []*topicSubs) []*topicSubs {
	for _, name := range ev.Topics {
		n := len(held)
		held = h.patterns.AppendMatches(held, name)
		k := n
		for _, ts := range held[n:] {
			if ts.stamp != ev.Seq {
				ts.stamp = ev.Seq
				held[k] = ts
				k++
			}
		}
		clear(held[k:])
		held = held[:k]
	}
	return held
}

// Evicted implements transport.Sink: a subscriber that has not taken ev,
// which has left the delivery window already, is dropped as slow. The
// transport calls it for nearly every publish once the history is full:
// while ev is newer than anything trimmed from the window, only a stream
// still reading its replay (before its seam) can be missing it, and
// without such streams nothing is looked at.
func (h *Hub) Evicted(ev *transport.Event) {
	if ev.Seq > h.backlog.trimmed.Load() && h.replaying.Load() == 0 {
		return
	}
	h.gone = append(h.gone[:0], ev)
	h.mu.RLock()
	h.backlog.mu.RLock()
	h.slow = h.behind(h.gone, h.slow[:0])
	h.backlog.mu.RUnlock()
	h.mu.RUnlock()
	h.dropAll()
}

// behind appends to slow the subscribers that have not taken an event of
// gone (events of their topics that have left the history) and cannot
// find it in the delivery window any more. The caller holds the hub's
// lock and the backlog's.
func (h *Hub) behind(gone []*transport.Event, slow []*subscriber) []*subscriber {
	for _, ev := range gone {
		for _, name := range ev.Topics {
			ts := h.topics[name]
			if ts == nil || ev.Seq > ts.floor {
				continue // nobody follows it here, or it is still in the window
			}
			slow = behindIn(ts, ev.Seq, slow)
		}
		if h.patterns.Len() == 0 {
			continue
		}
		for _, name := range ev.Topics {
			h.matched = h.patterns.AppendMatches(h.matched[:0], name)
			for _, ts := range h.matched {
				if ev.Seq <= ts.floor {
					slow = behindIn(ts, ev.Seq, slow)
				}
			}
			clear(h.matched)
		}
	}
	clear(gone)
	return slow
}

// behindIn appends to slow the subscribers of ts that have not taken the
// event at seq and have not ended.
func behindIn(ts *topicSubs, seq uint64, slow []*subscriber) []*subscriber {
	for _, s := range ts.subs {
		if s.behind(seq) && s.endReason() == endNone {
			slow = append(slow, s)
		}
	}
	return slow
}

// dropAll drops the subscribers that Deliver or Evicted found slow.
func (h *Hub) dropAll() {
	if len(h.slow) == 0 {
		return
	}
	for _, s := range h.slow {
		if s.finish(endSlow) {
			h.dropSlow(s)
		}
	}
	clear(h.slow)
	h.slow = h.slow[:0]
}

// slowWarnInterval is the least time between two slow-client warnings of
// a hub; the drops in between are counted in the next one, logged when the
// interval ends.
const slowWarnInterval = time.Second

// dropSlow removes a subscriber whose queue overflowed or whose writes
// stalled, counts it and warns about it. Its stream ends once its pending
// write returns, which its output is told to cut short; its client then
// resumes from history. Its topics are unwatched when its stream ends
// (Unsubscribe): dropSlow runs inside Deliver, which must not call the
// transport.
func (h *Hub) dropSlow(s *subscriber) {
	s.interrupt()
	h.removeLocal(s)
	h.counters.disconnects[endSlow].Add(1)
	h.slowUnwarned.Add(1)
	h.warnSlow(s.topics)
}

// warnSlow logs the slow drops not yet warned about, at once if the last
// warning is older than slowWarnInterval, else when it is: a hundred
// drops at once are one warning with a count of a hundred.
func (h *Hub) warnSlow(topics []string) {
	if !h.slowWarnDue.CompareAndSwap(false, true) {
		return // a warning is due already: it will count this drop
	}
	wait := slowWarnInterval - time.Duration(time.Now().UnixNano()-h.slowWarnedAt.Load())
	if wait <= 0 {
		h.flushSlowWarning(topics)
		return
	}
	time.AfterFunc(wait, func() { h.flushSlowWarning(topics) })
}

// flushSlowWarning logs the slow drops not yet warned about, with the
// topics of one of them.
func (h *Hub) flushSlowWarning(topics []string) {
	h.slowWarnedAt.Store(time.Now().UnixNano())
	h.slowWarnDue.Store(false) // before the count is taken: a drop from now on is warned about later
	n := h.slowUnwarned.Swap(0)
	if n == 0 {
		return
	}
	h.logger.Warn("disconnected slow subscribers: events they had yet to be sent left the history and the delivery window, or their writes stalled",
		zap.Int64("count", n), zap.Strings("topics", topics), zap.Int64("window_bytes", h.backlog.stats().MaxBytes))
}

// Interrupt implements transport.Sink: it ends the streams that follow
// any of topics (every stream for nil) with a retry hint; their clients
// resume from history, or get a reset.
func (h *Hub) Interrupt(topics []string, reason string) {
	n := 0
	end := func(ts *topicSubs) {
		for _, s := range ts.subs {
			s.finish(endResync)
			n++
		}
	}
	h.mu.RLock()
	if topics == nil {
		for _, ts := range h.topics {
			end(ts)
		}
		for _, ts := range h.patternSubs {
			end(ts)
		}
	} else {
		for _, name := range topics {
			if ts := h.topics[name]; ts != nil {
				end(ts)
			}
			// a pattern stream may have missed the events of the topics
			// it matches (not a hot path: Match's closure may allocate)
			h.patterns.Match(name, end)
		}
	}
	h.mu.RUnlock()
	h.logger.Info("interrupted streams: the transport could not deliver every event in order",
		zap.String("reason", reason), zap.Int("topics", len(topics)), zap.Int("streams", n))
}

// subscribeRequest is what a stream asks of the hub.
type subscribeRequest struct {
	topics         []string
	patterns       []string // topic patterns it follows besides topics (SPEC section 11)
	subject        string   // see subscriber.subject
	maxSubscribers int
	replay         transport.ReplayQuery
	// byPatterns makes its replay a PatternTransport.ReplayPatterns, with
	// maxTopics and latestPerTopic: a stream with patterns, or one of a
	// route with replay_latest; the hub's transport must serve patterns.
	byPatterns     bool
	maxTopics      int
	latestPerTopic int
	out            output // where the stream writes
	// member is the stream's member on its topics and patterns (the
	// route's presence placeholder), "" for none; presence lists the
	// topics whose presence it follows ($presence/<topic>). See members.go.
	member   string
	presence []string
}

// errNoPatterns refuses a subscription that needs a PatternTransport on a
// hub whose transport is not one (a route's Provision refuses that first).
var errNoPatterns = errors.New("the hub's transport does not serve patterns")

// Subscribe registers a subscriber for live events of req.topics and
// req.patterns, then reads the first page of what must be replayed to
// it; its stream reads the rest of the replay itself, from its position.
func (h *Hub) Subscribe(ctx context.Context, req subscribeRequest) (*subscriber, transport.Replay, error) {
	if req.byPatterns && h.patternT == nil {
		return nil, transport.Replay{}, errNoPatterns
	}
	s := newSubscriber(h, req.topics, req.out)
	s.patterns = req.patterns
	if len(req.patterns) > 0 {
		s.cursors = make([][]*transport.Event, 0, len(req.topics)+len(req.patterns))
	}
	s.subject = req.subject
	if !h.add(s, req.maxSubscribers) {
		return nil, transport.Replay{}, errOverCapacity
	}
	if len(s.topics) > 0 {
		if err := h.transport.Watch(ctx, s.topics); err != nil {
			h.removeLocal(s)
			return nil, transport.Replay{}, fmt.Errorf("watching topics of hub %q: %w", h.name, err)
		}
		s.watched = true
	}
	if len(s.patterns) > 0 {
		if err := h.patternT.WatchPatterns(ctx, s.patterns); err != nil {
			h.release(s)
			return nil, transport.Replay{}, fmt.Errorf("watching patterns of hub %q: %w", h.name, err)
		}
		s.watchedPatterns = true
	}
	req.replay.Topics = s.topics
	req.replay.MaxBytes = pageBytes
	var rep transport.Replay
	var err error
	if req.byPatterns {
		s.byPatterns, s.maxTopics = true, req.maxTopics
		rep, err = h.patternT.ReplayPatterns(ctx, transport.PatternQuery{ReplayQuery: req.replay,
			Patterns: s.patterns, MaxTopics: req.maxTopics, LatestPerTopic: req.latestPerTopic})
		if rep.More {
			s.latest = req.latestPerTopic // its next pages go on with it, up to its seam
		}
	} else {
		rep, err = h.transport.Replay(ctx, req.replay)
	}
	if err != nil {
		h.release(s)
		return nil, transport.Replay{}, fmt.Errorf("reading history of hub %q: %w", h.name, err)
	}
	if req.member != "" || len(req.presence) > 0 {
		if err := h.startPresence(ctx, s, req.member, req.presence); err != nil {
			h.release(s)
			return nil, transport.Replay{}, fmt.Errorf("presence of hub %q: %w", h.name, err)
		}
	}
	h.counters.connections.Add(1)
	return s, rep, nil
}

// Unsubscribe takes s out of the hub once its stream has ended, and
// counts the stream's end for reason (a slow one was counted when it was
// dropped).
func (h *Hub) Unsubscribe(s *subscriber, reason endReason) {
	h.release(s)
	if reason != endSlow {
		h.counters.disconnects[reason].Add(1)
	}
}

// wrote counts the events written to local subscribers: live ones, and
// replayed ones from the history.
func (h *Hub) wrote(live, replayed int) {
	if live > 0 {
		h.counters.delivered.Add(uint64(live))
	}
	if replayed > 0 {
		h.counters.replayed.Add(uint64(replayed))
	}
}

// refused counts a subscription refused for reason (capacity, or the
// transport unavailable).
func (h *Hub) refused(reason endReason) {
	h.counters.disconnects[reason].Add(1)
}

// release removes s from the hub, if it is still there, and releases its
// topics in the transport.
func (h *Hub) release(s *subscriber) {
	s.replay(false)
	h.removeLocal(s)
	if s.watched {
		s.watched = false
		h.transport.Unwatch(s.topics)
	}
	if s.watchedPatterns {
		s.watchedPatterns = false
		h.patternT.UnwatchPatterns(s.patterns)
	}
	if s.member != "" || s.feed != nil {
		h.stopPresence(s)
	}
	h.gate.forget(s)
}

// add registers s unless the hub already has max subscribers (0: no limit).
func (h *Hub) add(s *subscriber, max int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if max > 0 && h.subscribers >= max {
		return false
	}
	nt := len(s.topics)
	s.slots = make([]int, nt+len(s.patterns))
	s.logs = make([]*topicSubs, nt+len(s.patterns))
	for i, name := range s.topics {
		ts := h.topics[name]
		if ts == nil {
			// nothing of the topic is in the window yet; Deliver, which
			// sets backlog.last, is excluded by the hub's lock
			ts = &topicSubs{floor: h.backlog.last}
			h.topics[name] = ts
		}
		s.slots[i] = len(ts.subs)
		s.logs[i] = ts
		ts.subs = append(ts.subs, s)
	}
	shrink.Grown(h.topics, &h.topicsPeak)
	for i, p := range s.patterns {
		ts := h.patternSubs[p]
		if ts == nil {
			ts = &topicSubs{floor: h.backlog.last} // as a new topic's
			h.patternSubs[p] = ts
			h.patterns.Add(p, ts)
		}
		s.slots[nt+i] = len(ts.subs)
		s.logs[nt+i] = ts
		ts.subs = append(ts.subs, s)
	}
	s.registered = true
	h.subscribers++
	return true
}

// removeLocal unregisters s and reports whether it was registered.
func (h *Hub) removeLocal(s *subscriber) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !s.registered {
		return false
	}
	for i, name := range s.topics {
		ts := h.topics[name]
		if moved := ts.removeAt(s, s.slots[i]); moved != nil {
			moved.slots[moved.topicIndex(name)] = s.slots[i]
		}
		if len(ts.subs) == 0 {
			delete(h.topics, name)
		}
	}
	h.topics = shrink.Map(h.topics, &h.topicsPeak)
	nt := len(s.topics)
	for i, p := range s.patterns {
		ts := h.patternSubs[p]
		if moved := ts.removeAt(s, s.slots[nt+i]); moved != nil {
			moved.slots[len(moved.topics)+moved.patternIndex(p)] = s.slots[nt+i]
		}
		if len(ts.subs) == 0 {
			delete(h.patternSubs, p)
			h.patterns.Remove(p, ts)
		}
	}
	s.registered = false
	s.slots = nil
	h.subscribers--
	return true
}

// HubStats describe a hub at one moment. The counters count from the
// hub's creation: they go on across config reloads that keep the hub.
type HubStats struct {
	// Transport is the name of the hub's transport, e.g. "memory".
	Transport string `json:"transport"`
	// Subscribers is the number of local subscribers.
	Subscribers int `json:"subscribers"`
	// SubscribedTopics is the number of topics with local subscribers.
	SubscribedTopics int `json:"subscribed_topics"`
	// SubscribedPatterns is the number of topic patterns with local
	// subscribers (SPEC section 11).
	SubscribedPatterns int `json:"subscribed_patterns,omitempty"`
	// Connections counts the streams opened since the hub was created;
	// subscriptions refused for capacity are not among them.
	Connections uint64 `json:"connections"`
	// Published counts the events published through this node.
	Published uint64 `json:"events_published"`
	// Delivered counts the events written to local subscribers.
	Delivered uint64 `json:"events_delivered"`
	// Replayed counts the events written from history.
	Replayed uint64 `json:"events_replayed"`
	// Disconnects counts the streams that ended, by reason (client, slow,
	// max_age, shutdown), and the subscriptions refused for capacity.
	Disconnects map[string]uint64 `json:"disconnects"`
	// Refusals counts the requests (subscriptions and publishes) that
	// the access control of the hub's routes refused, by reason:
	// unauthorized (no token, or an invalid one), forbidden (a topic not
	// granted), expired (an expired token).
	Refusals map[string]uint64 `json:"refusals"`
	// History describes the retained events.
	History transport.Stats `json:"history"`
	// Window describes the delivery window: the newest events, held once
	// for the local subscribers, that they may still have to be sent.
	Window WindowStats `json:"window"`
	// TransportState is the transport's health: whether it can serve now,
	// its last error, the topics it watches for this node, and its
	// resynchronisations by reason.
	TransportState transport.State `json:"transport_state"`
}

// Stats returns the hub's current figures.
func (h *Hub) Stats() HubStats {
	h.mu.RLock()
	st := HubStats{Subscribers: h.subscribers, SubscribedTopics: len(h.topics), SubscribedPatterns: len(h.patternSubs)}
	h.mu.RUnlock()
	st.Transport = h.transportName
	st.Connections = h.counters.connections.Load()
	st.Published = h.counters.published.Load()
	st.Delivered = h.counters.delivered.Load()
	st.Replayed = h.counters.replayed.Load()
	st.Disconnects = make(map[string]uint64, numEndReasons-1)
	for r := endNone + 1; r < numEndReasons; r++ {
		st.Disconnects[r.String()] = h.counters.disconnects[r].Load()
	}
	st.Refusals = make(map[string]uint64, numRefusals)
	for r := range numRefusals {
		st.Refusals[r.String()] = h.counters.refusals[r].Load()
	}
	st.History = h.transport.Stats()
	st.Window = h.backlog.stats()
	st.TransportState = st.History.State
	return st
}

// Interface guards
var _ transport.Sink = (*Hub)(nil)
