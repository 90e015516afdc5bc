package memory

import (
	"sort"

	"github.com/ssehub/caddy-sse/internal/patternset"
	"github.com/ssehub/caddy-sse/internal/shrink"
	"github.com/ssehub/caddy-sse/transport"
)

// How many topics without retained events the history remembers, and how
// many bytes their names and records may take, before it forgets them all
// at once. A topic's record says up to which event its history was
// evicted; for a forgotten topic, the highest such event of all forgotten
// topics stands in, which errs on the side of a reset.
const (
	maxIdleTopics    = 16384
	maxIdleBytes     = 4 << 20
	idleTopicRecSize = 96 // a topicLog and its map entry, besides the name
)

// record is one retained event and the number of topics still holding it.
type record struct {
	ev   *transport.Event
	refs int
}

// topicLog is the history of one topic, oldest first.
type topicLog struct {
	name    string
	recs    []*record
	head    int
	evicted uint64 // Seq of the newest event evicted from this topic
}

func (tl *topicLog) len() int { return len(tl.recs) - tl.head }

func (tl *topicLog) front() *record {
	if tl.len() == 0 {
		return nil
	}
	return tl.recs[tl.head]
}

func (tl *topicLog) popFront() *record {
	rec := tl.recs[tl.head]
	tl.recs[tl.head] = nil
	tl.head++
	tl.evicted = rec.ev.Seq
	if tl.head == len(tl.recs) {
		tl.recs, tl.head = nil, 0 // an idle topic holds no array
	} else if tl.head >= 32 && tl.head*2 >= len(tl.recs) {
		n := copy(tl.recs, tl.recs[tl.head:])
		clear(tl.recs[n:])
		tl.recs, tl.head = tl.recs[:n], 0
	}
	return rec
}

// after returns the records newer than seq.
func (tl *topicLog) after(seq uint64) []*record {
	live := tl.recs[tl.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].ev.Seq > seq })
	return live[i:]
}

// last returns the newest n records.
func (tl *topicLog) last(n int) []*record {
	live := tl.recs[tl.head:]
	if len(live) > n {
		live = live[len(live)-n:]
	}
	return live
}

// history is the retained events of a hub: a log of all of them in Seq
// order, for eviction by age and size, and one log per topic, for eviction
// by count and for replay. An event published to several topics is one
// record in each of their logs.
type history struct {
	topics     map[string]*topicLog
	log        []*record // records with refs == 0 are dead, awaiting removal
	logHead    int
	dead       int
	retained   int
	bytes      int64
	idle       int    // topics without retained events
	idleBytes  int    // what the idle topics' records take
	forgotten  uint64 // highest topicLog.evicted of forgotten topics
	topicsPeak int    // the most topics since topics was last rebuilt (shrink.Map)

	evicted func(*transport.Event) // called for every event that leaves

	// index holds the topics by their segments, for pattern replays; nil
	// until the first of them (see indexed), so that a hub without
	// pattern subscriptions pays nothing for it.
	index *patternset.Index[*topicLog]
}

// indexed returns the index of the topics, building it at the first call.
func (h *history) indexed() *patternset.Index[*topicLog] {
	if h.index == nil {
		h.index = new(patternset.Index[*topicLog])
		for name, tl := range h.topics {
			h.index.Put(name, tl)
		}
	}
	return h.index
}

func (h *history) init(evicted func(*transport.Event)) {
	h.topics = make(map[string]*topicLog)
	h.evicted = evicted
}

// add stores ev, keeping at most perTopic events in each of its topics.
func (h *history) add(ev *transport.Event, perTopic int) {
	rec := &record{ev: ev, refs: len(ev.Topics)}
	h.log = append(h.log, rec)
	h.retained++
	h.bytes += ev.Size()
	for _, name := range ev.Topics {
		tl := h.topics[name]
		if tl == nil {
			tl = &topicLog{name: name}
			h.topics[name] = tl
			if h.index != nil {
				h.index.Put(name, tl)
			}
			shrink.Grown(h.topics, &h.topicsPeak)
		} else if tl.len() == 0 {
			h.setIdle(tl, false)
		}
		tl.recs = append(tl.recs, rec)
		h.trimTopic(tl, perTopic)
	}
}

// trimTopic evicts the oldest events of tl beyond n.
func (h *history) trimTopic(tl *topicLog, n int) {
	if tl.len() <= n {
		return
	}
	for tl.len() > n {
		h.release(tl.popFront())
	}
	if tl.len() == 0 {
		h.setIdle(tl, true)
	}
}

// setIdle counts tl in or out of the idle topics.
func (h *history) setIdle(tl *topicLog, idle bool) {
	size := len(tl.name) + idleTopicRecSize
	if idle {
		h.idle++
		h.idleBytes += size
		return
	}
	h.idle--
	h.idleBytes -= size
}

// release drops one topic's hold on rec.
func (h *history) release(rec *record) {
	rec.refs--
	if rec.refs > 0 {
		return
	}
	h.retained--
	h.bytes -= rec.ev.Size()
	h.evicted(rec.ev)
	rec.ev = nil // a dead record awaiting compaction keeps nothing alive
	h.dead++
	if h.dead >= 64 && h.dead*2 >= len(h.log)-h.logHead {
		h.compactLog()
	}
}

// compactLog removes the dead records from the log, and gives back the
// log's array when it is much larger than what is retained.
func (h *history) compactLog() {
	inPlace := cap(h.log) <= 4*h.retained+1024
	out := h.log[:0]
	if !inPlace {
		out = make([]*record, 0, 2*h.retained+64)
	}
	for _, rec := range h.log[h.logHead:] {
		if rec.refs > 0 {
			out = append(out, rec)
		}
	}
	if inPlace {
		clear(h.log[len(out):])
	}
	h.log, h.logHead, h.dead = out, 0, 0
}

// oldest returns the oldest retained record, or nil.
func (h *history) oldest() *record {
	for h.logHead < len(h.log) && h.log[h.logHead].refs == 0 {
		h.log[h.logHead] = nil
		h.logHead++
		h.dead--
	}
	if h.logHead == len(h.log) {
		if cap(h.log) > 1024 {
			h.log = nil
		} else {
			h.log = h.log[:0]
		}
		h.logHead = 0
		return nil
	}
	return h.log[h.logHead]
}

// evictOldest evicts the oldest retained event from every topic that still
// holds it; there, it is the oldest event too.
func (h *history) evictOldest() {
	rec := h.oldest()
	if rec == nil {
		return
	}
	for _, name := range rec.ev.Topics {
		tl := h.topics[name]
		if tl == nil || tl.front() != rec {
			continue
		}
		h.release(tl.popFront())
		if tl.len() == 0 {
			h.setIdle(tl, true)
		}
	}
}

// trimBytes evicts the oldest events until the history fits in max bytes.
func (h *history) trimBytes(max int64) {
	for h.bytes > max && h.retained > 0 {
		h.evictOldest()
	}
}

// evictedAfter reports whether an event of topic newer than seq has been
// evicted (or may have been, for a forgotten topic).
func (h *history) evictedAfter(topic string, seq uint64) bool {
	if tl := h.topics[topic]; tl != nil {
		return tl.evicted > seq
	}
	return h.forgotten > seq
}

// sweepIdleTopics forgets the topics without retained events once there
// are too many of them or they take too much memory.
func (h *history) sweepIdleTopics() {
	if h.idle <= maxIdleTopics && h.idleBytes <= maxIdleBytes {
		return
	}
	for name, tl := range h.topics {
		if tl.len() == 0 {
			h.forgotten = max(h.forgotten, tl.evicted)
			delete(h.topics, name)
			if h.index != nil {
				h.index.Delete(name)
			}
		}
	}
	h.topics = shrink.Map(h.topics, &h.topicsPeak)
	h.idle, h.idleBytes = 0, 0
}
