package caddysse

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// Who is there (SPEC section 11, presence). A route with presence makes
// each of its streams a member (the value of its presence placeholder) of
// each of its topics, and of each of its patterns. The hub counts its own
// streams per (topic, member) and tells its transport when a member
// arrives on a topic on this node (Join) and when it has had no stream
// there for the hub's presence grace (Leave): a client that reconnects
// within the grace (max_age, a reload, a network blip) causes neither a
// leave nor a join. The transport counts the distinct members across
// nodes and hands every change back, numbered (transport.PresenceSink).
//
// A stream that asks for the meta-topic $presence/<topic> is a watcher
// of <topic>: it is registered before the transport's snapshot of the
// topic is read, and sent the snapshot (a presence event) and then the
// changes numbered above the snapshot's version (join and leave events),
// so that none is missed or applied twice. Presence events are written
// without an id: the client's Last-Event-ID keeps tracking the real
// events, and a reconnection gets a fresh snapshot.

// presencePrefix starts the meta-topic of a topic's presence.
const presencePrefix = "$presence/"

// Defaults of a hub's presence.
const (
	DefaultPresenceGrace = 5 * time.Second
	DefaultPresenceMax   = 1000
)

// Types of the presence events.
const (
	presenceEvent = "presence"
	joinEvent     = "join"
	leaveEvent    = "leave"
)

// hubPresence is a hub's presence: this node's members, the watchers of
// topics' presence, and its transport's part.
type hubPresence struct {
	t      transport.PresenceTransport
	logger *zap.Logger
	grace  atomic.Int64 // nanoseconds a leave is held back
	max    atomic.Int64 // the most members a snapshot lists

	// mu guards local and closed; Join and Leave are called under it, so
	// that the transport gets them in the order the counts changed.
	mu     sync.Mutex
	local  map[string]map[string]*localMember // topic → member → its streams here
	closed bool

	// wmu guards watchers and seen; changes are handed to the watchers
	// under it.
	wmu      sync.Mutex
	watchers map[string][]*subscriber // topic → the streams following its presence
	seen     uint64                   // the version of the last change taken
}

// localMember is a member's streams on one topic, on this node.
type localMember struct {
	streams int
	due     time.Time   // when its held-back leave is due, while streams is 0
	timer   *time.Timer // fires the held-back leave; kept (stopped) for the next one
}

// newHubPresence returns the presence of a hub on t, nil when t does not
// count members.
func newHubPresence(t transport.Transport, logger *zap.Logger) *hubPresence {
	pt, ok := t.(transport.PresenceTransport)
	if !ok {
		return nil
	}
	hp := &hubPresence{t: pt, logger: logger, local: make(map[string]map[string]*localMember),
		watchers: make(map[string][]*subscriber)}
	hp.set(PresenceSettings{})
	return hp
}

// PresenceSettings are a hub's presence settings (HubConfig's
// presence_grace and presence_max).
type PresenceSettings struct {
	// Grace is how long a member's leave is held back; 0 stands for
	// DefaultPresenceGrace.
	Grace time.Duration
	// Max is the most members a presence event lists; 0 stands for
	// DefaultPresenceMax.
	Max int
}

// set applies s, defaults for its zero fields, in place: held-back leaves
// already scheduled keep their time.
func (hp *hubPresence) set(s PresenceSettings) {
	if s.Grace <= 0 {
		s.Grace = DefaultPresenceGrace
	}
	if s.Max <= 0 {
		s.Max = DefaultPresenceMax
	}
	hp.grace.Store(int64(s.Grace))
	hp.max.Store(int64(s.Max))
}

// setPresence applies a config's presence settings to the hub.
func (h *Hub) setPresence(s PresenceSettings) {
	if h.pres != nil {
		h.pres.set(s)
	}
}

// join counts a stream of member on names (its topics and patterns): a
// member new here joins in the transport, one whose leave was held back
// stays without a word.
func (hp *hubPresence) join(member string, names []string) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if hp.closed {
		return
	}
	for _, name := range names {
		byMember := hp.local[name]
		if byMember == nil {
			byMember = make(map[string]*localMember)
			hp.local[name] = byMember
		}
		lm := byMember[member]
		switch {
		case lm == nil:
			byMember[member] = &localMember{streams: 1}
			hp.t.Join(name, member)
		case lm.streams == 0: // back within the grace
			lm.timer.Stop()
			lm.streams = 1
		default:
			lm.streams++
		}
	}
}

// leave uncounts a stream of member on names; a member left without
// streams on a topic leaves it after the grace, unless it is back.
func (hp *hubPresence) leave(member string, names []string) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if hp.closed {
		return
	}
	grace := time.Duration(hp.grace.Load())
	for _, name := range names {
		lm := hp.local[name][member]
		if lm == nil || lm.streams == 0 {
			continue
		}
		lm.streams--
		if lm.streams > 0 {
			continue
		}
		lm.due = time.Now().Add(grace)
		if lm.timer == nil {
			lm.timer = time.AfterFunc(grace, func() { hp.expire(name, member, lm) })
		} else {
			lm.timer.Reset(grace)
		}
	}
}

// expire ends a held-back leave: the member leaves, unless it came back
// in the meantime, or left again and is not due yet (a timer that fired
// as it came back: its new one fires later).
func (hp *hubPresence) expire(name, member string, lm *localMember) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	byMember := hp.local[name]
	if hp.closed || byMember[member] != lm || lm.streams > 0 || time.Now().Before(lm.due) {
		return
	}
	delete(byMember, member)
	if len(byMember) == 0 {
		delete(hp.local, name)
	}
	hp.t.Leave(name, member)
}

// close stops the held-back leaves: the hub is going, with its transport.
func (hp *hubPresence) close() {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	hp.closed = true
	for _, byMember := range hp.local {
		for _, lm := range byMember {
			if lm.timer != nil {
				lm.timer.Stop()
			}
		}
	}
}

// localMembers returns the number of this node's members of topic,
// those whose leave is held back included.
func (hp *hubPresence) localMembers(topic string) int {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return len(hp.local[topic])
}

// PresenceChanged implements transport.PresenceSink: it hands c to the
// watchers of its topic. A gap in the versions (changes the transport
// could not deliver, e.g. while its connection was down) ends every
// watcher's stream, whose client gets a fresh snapshot on reconnection.
func (h *Hub) PresenceChanged(c transport.PresenceChange) {
	hp := h.pres
	if hp == nil {
		return
	}
	hp.wmu.Lock()
	defer hp.wmu.Unlock()
	if hp.gap(c.Version) {
		n := hp.endWatchers()
		hp.logger.Info("interrupted the streams that follow presence: changes were missed",
			zap.Uint64("version", c.Version), zap.Int("streams", n))
		return
	}
	for _, s := range hp.watchers[c.Topic] {
		switch queued, full := s.feed.offer(c); {
		case full:
			h.endSlowWatcher(s)
		case queued:
			s.wakeUp()
		}
	}
}

// endSlowWatcher ends, as slow, the stream of a watcher whose presence
// events are more than presenceFeedMax behind. The caller holds wmu.
func (h *Hub) endSlowWatcher(s *subscriber) {
	if !s.finish(endSlow) {
		return
	}
	s.interrupt()
	h.counters.disconnects[endSlow].Add(1)
	h.slowUnwarned.Add(1)
	h.warnSlow(s.presence)
}

// PresenceMissed implements transport.PresenceResyncSink: the transport
// may have missed changes (its connection was lost, or it dropped messages
// it could not keep up with), so every watcher's stream ends and its client
// gets a fresh snapshot; the versions are taken afresh from the next change.
func (h *Hub) PresenceMissed() {
	hp := h.pres
	if hp == nil {
		return
	}
	hp.wmu.Lock()
	defer hp.wmu.Unlock()
	hp.seen = 0
	if n := hp.endWatchers(); n > 0 {
		hp.logger.Info("interrupted the streams that follow presence: the transport may have missed changes",
			zap.Int("streams", n))
	}
}

// endWatchers ends the stream of every watcher, to be resumed with a
// fresh snapshot, and returns how many it ended. The caller holds wmu.
func (hp *hubPresence) endWatchers() int {
	n := 0
	for _, subs := range hp.watchers {
		for _, s := range subs {
			if s.finish(endResync) {
				n++
			}
		}
	}
	return n
}

// gap takes the version of a change and reports whether changes before it
// were missed, or the versions started again (a store that lost them).
// A version at or below the last one is a change that a snapshot already
// counted, still on its way. The caller holds wmu.
func (hp *hubPresence) gap(v uint64) bool {
	switch {
	case hp.seen == 0 || v == hp.seen+1:
		hp.seen = v
		return false
	case v == 1: // the versions started again
		hp.seen = v
		return true
	case v <= hp.seen:
		return false
	default:
		hp.seen = v
		return true
	}
}

// watch registers s as a watcher of its presence topics, reads their
// snapshots and queues them for its stream (the changes that come in the
// meantime wait in its feed for their snapshot).
func (hp *hubPresence) watch(ctx context.Context, s *subscriber) error {
	hp.wmu.Lock()
	for _, topic := range s.presence {
		hp.watchers[topic] = append(hp.watchers[topic], s)
	}
	hp.wmu.Unlock()
	max := int(hp.max.Load())
	for _, topic := range s.presence {
		snap, err := hp.t.Presence(ctx, topic, max)
		if err != nil {
			return fmt.Errorf("reading the presence of topic %q: %w", topic, err)
		}
		hp.wmu.Lock()
		if hp.seen == 0 {
			hp.seen = snap.Version
		}
		hp.wmu.Unlock()
		s.feed.ready(topic, snap)
	}
	return nil
}

// unwatch takes s out of the watchers.
func (hp *hubPresence) unwatch(s *subscriber) {
	hp.wmu.Lock()
	defer hp.wmu.Unlock()
	for _, topic := range s.presence {
		subs := hp.watchers[topic]
		for i, w := range subs {
			if w == s {
				subs[i] = subs[len(subs)-1]
				subs[len(subs)-1] = nil
				subs = subs[:len(subs)-1]
				break
			}
		}
		if len(subs) == 0 {
			delete(hp.watchers, topic)
		} else {
			hp.watchers[topic] = subs
		}
	}
}

// startPresence makes s, registered in the hub, a member of its topics
// and patterns (if it has a member) and a watcher of its presence topics
// (if it has any). Without presence in the hub, only a watcher is
// refused.
func (h *Hub) startPresence(ctx context.Context, s *subscriber, member string, watched []string) error {
	hp := h.pres
	if hp == nil {
		if len(watched) > 0 {
			return errNoPresence
		}
		return nil
	}
	if len(watched) > 0 {
		s.presence = watched
		s.feed = newPresenceFeed(watched)
		if err := hp.watch(ctx, s); err != nil {
			return err
		}
	}
	if member != "" && len(s.topics)+len(s.patterns) > 0 {
		s.member = member
		hp.join(member, s.memberOf())
	}
	return nil
}

// errNoPresence refuses a watcher on a hub whose transport does not count
// members.
var errNoPresence = errors.New("the hub's transport does not count members")

// stopPresence undoes startPresence once s has ended (or failed to start).
func (h *Hub) stopPresence(s *subscriber) {
	hp := h.pres
	if hp == nil {
		return
	}
	if s.member != "" {
		hp.leave(s.member, s.memberOf())
		s.member = ""
	}
	if s.feed != nil {
		hp.unwatch(s)
	}
}

// memberOf returns the names s is a member of: its topics and patterns.
func (s *subscriber) memberOf() []string {
	if len(s.patterns) == 0 {
		return s.topics
	}
	return append(append(make([]string, 0, len(s.topics)+len(s.patterns)), s.topics...), s.patterns...)
}

// Interface guards
var (
	_ transport.PresenceSink       = (*Hub)(nil)
	_ transport.PresenceResyncSink = (*Hub)(nil)
)
