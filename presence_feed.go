package caddysse

import (
	"encoding/json"
	"sync"

	"github.com/ssehub/caddy-sse/transport"
)

// A watcher's presence events (members.go): its snapshots and the changes
// after them, queued for its stream's writer, without ids.

// presenceFeedMax bounds the presence events queued for a watcher: one
// whose client reads too slowly to keep up with the changes is ended as
// slow (its client gets a fresh snapshot when it reconnects), rather than
// hold them in memory.
const presenceFeedMax = 1 << 20

// presenceFeed is a watcher's queue of presence events, and where it
// stands in each topic's changes.
type presenceFeed struct {
	mu     sync.Mutex
	topics []feedTopic
	queue  []byte // events to write, whole
}

// feedTopic is where a watcher stands in a topic's changes.
type feedTopic struct {
	topic   string
	ready   bool   // its snapshot is queued
	version uint64 // of the last change queued, or of the snapshot
	pending []transport.PresenceChange
}

func newPresenceFeed(topics []string) *presenceFeed {
	f := &presenceFeed{topics: make([]feedTopic, len(topics))}
	for i, t := range topics {
		f.topics[i].topic = t
	}
	return f
}

// offer queues the event of c unless the watcher's snapshot already
// counted it; a change that comes before the snapshot waits for it. It
// reports whether it queued an event, and whether the queue is over
// presenceFeedMax (then it queued nothing: the watcher is too slow).
func (f *presenceFeed) offer(c transport.PresenceChange) (queued, full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.find(c.Topic)
	switch {
	case ft == nil:
		return false, false
	case !ft.ready:
		ft.pending = append(ft.pending, c)
		return false, false
	case c.Version <= ft.version:
		return false, false
	case len(f.queue) >= presenceFeedMax:
		return false, true
	}
	ft.version = c.Version
	f.queue = appendChange(f.queue, c)
	return true, false
}

// ready queues the snapshot of topic, then the changes that came before
// it and are newer.
func (f *presenceFeed) ready(topic string, snap transport.PresenceSnapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := f.find(topic)
	ft.ready, ft.version = true, snap.Version
	f.queue = appendSnapshot(f.queue, topic, snap)
	for _, c := range ft.pending {
		if c.Version > ft.version {
			ft.version = c.Version
			f.queue = appendChange(f.queue, c)
		}
	}
	ft.pending = nil
}

// take returns the queued events and empties the queue; nil for a nil
// feed.
func (f *presenceFeed) take() []byte {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.queue
	f.queue = nil
	return b
}

func (f *presenceFeed) find(topic string) *feedTopic {
	for i := range f.topics {
		if f.topics[i].topic == topic {
			return &f.topics[i]
		}
	}
	return nil
}

// presenceData is the data of a presence event.
type presenceData struct {
	Topic   string   `json:"topic"`
	Count   int      `json:"count"`
	Members []string `json:"members"`
}

// memberData is the data of a join or leave event.
type memberData struct {
	Topic  string `json:"topic"`
	Member string `json:"member"`
}

// appendSnapshot appends the presence event of snap, without an id.
func appendSnapshot(b []byte, topic string, snap transport.PresenceSnapshot) []byte {
	members := snap.Members
	if members == nil {
		members = []string{}
	}
	data, _ := json.Marshal(presenceData{Topic: topic, Count: snap.Count, Members: members})
	return transport.AppendEvent(b, "", presenceEvent, -1, string(data))
}

// appendChange appends the join or leave event of c, without an id.
func appendChange(b []byte, c transport.PresenceChange) []byte {
	typ := leaveEvent
	if c.Join {
		typ = joinEvent
	}
	data, _ := json.Marshal(memberData{Topic: c.Topic, Member: c.Member})
	return transport.AppendEvent(b, "", typ, -1, string(data))
}
