// Package transport defines how a caddy-sse hub stores its events and
// carries them between nodes. A transport assigns event ids, keeps each
// topic's history, replays it to resuming subscribers and delivers every
// published event, from any node, to the local hub. Transports are Caddy
// modules in the sse.transports namespace; the in-memory one is the default.
package transport

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"
)

// Transport stores the events of one hub and delivers them, in id order,
// to the hub on every node that shares it.
//
// # Life
//
// A transport module is provisioned with the Caddy context of the config
// that declared its hub, but it may outlive that config: a hub survives
// reloads that keep its name and transport. A transport therefore opens its
// resources in Open, not in Provision, does not keep the provisioning
// context, and releases everything in Close. Open is called once, before
// any other method; Close once, last. Every other method may be called
// from any goroutine, concurrently.
//
// # Order
//
// A hub has one sequence of events: Seq starts at 1 in each epoch (see
// FormatID) and grows by one with every event published to the hub, by
// any node. The transport hands the sink the events of the topics watched
// on this node, each once, in increasing Seq order, on every node in the
// same order. It may skip events of topics this node does not watch, and
// may also deliver them: the sink ignores events no local subscriber
// follows. An event it cannot deliver in order it never delivers out of
// order nor skips silently: it interrupts the streams of its topics (see
// Sink.Interrupt), whose clients resume from history.
//
// # The replay seam
//
// A new subscription is registered with the hub before the hub calls
// Watch, and Watch is called before Replay. Live events of a topic reach
// the sink from the moment Watch returns. Replay reads the history and
// reports in Replay.Head the Seq up to which it covered it: the stream
// sends Replay.Events and then the live events with Seq above Head. So
// every retained event of the topics with Seq at or below Head must be in
// Events (when newer than the resume point), and every event with Seq
// above Head must reach the sink after Watch returned.
//
// # Pages and positions
//
// A stream is a position in the hub's sequence, not a copy of what it has
// yet to send. The hub keeps the newest events (its delivery window) once
// for all its local subscribers; a stream that is behind it, resuming
// from an old id or slower than the others, reads the history a page at
// a time (ReplayQuery.MaxBytes), each page resuming from the last event
// of the one before, so that no stream ever holds more than a page. Only
// when the history no longer has every event after its position does the
// stream end (a reset for a new one, slow for a live one). A transport
// that keeps its history in this process tells the sink when an event
// leaves it (Sink.Evicted), so that a stream that needs an event that is
// gone ends at once, even while its client reads nothing.
//
// # Batches
//
// Publish stores a batch of messages atomically: all of them or none, with
// consecutive Seqs, delivered in order. It returns once they are stored
// (for a shared transport: where every node can read them).
//
// # Calling the sink
//
// Deliver, Interrupt and Evicted are never called concurrently for one
// hub, and never after Close returns. A transport may hold its own locks while it
// calls them: the sink never calls back into the transport from inside
// either call (it does so later, from other goroutines). The sink does
// not block on subscribers' sockets; it returns quickly.
//
// # Unavailability
//
// A transport that cannot reach what it depends on (a Redis server)
// answers Publish, Watch and Replay with an error wrapping ErrUnavailable,
// within the deadline of ctx. The hub answers a publish with 503 and a new
// subscription with a retry hint (never an error status, which would make
// browsers give up). Streams already open stay open: the transport
// delivers what they missed, in order, once it is back, or interrupts
// them.
//
// # Idempotency
//
// A publish with PublishRequest.Key is idempotent within IdempotencyTTL,
// on every node that shares the hub. The transport records, atomically
// with storing the events, the key, the request's fingerprint and what a
// repeat needs of the events published so far under it, by position:
// their ids (kept as runs of consecutive Seqs, one per Publish call at
// most) and the subscriber counts of the first IdempotencyCountedPositions
// (small numbers). A later request with the same key and fingerprint gets
// receipts for the positions already published, with Repeated set, and
// publishes only the rest: this lets a streaming publish that reconnects
// continue where it stopped. A repeated receipt has the recorded ID, the
// Topics of the repeat's own message (the fingerprint guarantees they are
// the same) and the recorded Subscribers, 0 beyond the first
// IdempotencyCountedPositions positions. A different fingerprint is
// refused with ErrKeyMismatch.
//
// The records of a hub are bounded by Limits.IdempotencyBudget: their
// bytes, counted as they cost (the key, the fingerprint, the runs and
// counts, and what holds them: map entries, and for a shared transport the
// keys of its store), stay within it. When a new key or a record that grows
// takes them past it, the keys used first are forgotten first, before
// their IdempotencyTTL; never the key of the request being published,
// which is kept even when it alone exceeds the budget. A forgotten key is
// unknown: a request that repeats it publishes anew. Stats.Idempotency
// reports the records' number and bytes.
type Transport interface {
	// Open binds the transport to the hub called name and starts the
	// delivery of its events to sink.
	Open(name string, limits Limits, sink Sink) error

	// Publish assigns ids to the messages of req, stores them in the
	// history and delivers them, in order. It returns once they are
	// stored, with one receipt per message. All messages must already be
	// valid.
	Publish(ctx context.Context, req PublishRequest) ([]Receipt, error)

	// Watch tells the transport that a local subscriber follows topics.
	// Live events of a watched topic reach the sink from the moment Watch
	// returns. Calls are counted: each Watch that returned nil is matched
	// by one Unwatch of the same topics.
	Watch(ctx context.Context, topics []string) error

	// Unwatch undoes one Watch of the same topics. It does not wait for
	// the network.
	Unwatch(topics []string)

	// Replay returns the retained events that a new subscription must be
	// sent before live events (see ReplayQuery and "The replay seam").
	Replay(ctx context.Context, q ReplayQuery) (Replay, error)

	// SetLimits changes the limits in place; shrinking trims the oldest
	// events, and forgets the oldest idempotency keys, at once.
	SetLimits(limits Limits)

	// Stats reports the size of the history and of the idempotency
	// records, and the transport's state.
	Stats() Stats

	// Disconnect ends the streams that match d on every node bound to
	// the hub, through each node's Sink.Disconnect: this node's before it
	// returns, with their number; the other nodes' as the request reaches
	// them (a shared transport sends it to them; a node that is not
	// connected to it at that moment does not get it). The returned error
	// tells that the other nodes could not be told; the local streams have
	// been ended all the same.
	Disconnect(ctx context.Context, d Disconnect) (int, error)

	// Close releases the transport's resources. The sink is not called
	// after Close returns.
	Close() error
}

// PatternTransport is a Transport that also serves pattern subscriptions
// and latest-per-topic replays (SPEC section 11). It is optional: a hub
// checks for it with a type assertion, and refuses (or serves without)
// what needs it when its transport does not implement it. Everything
// Transport says holds for its methods too: they may be called from any
// goroutine, after Open and before Close, and answer ErrUnavailable and
// ErrClosed alike.
//
// # Patterns
//
// A pattern is a topic pattern as package access defines it: "*" as a
// whole segment matches exactly one segment, "**" as the last segment one
// or more, any other character is literal; a topic matches a pattern when
// access.Match says so. A transport never decides whether a requested
// string is a pattern or a topic: in a query's Topics or in Watch, "a/*"
// is the topic of that name (SPEC section 4: without the route's
// patterns setting, "*" is an ordinary character); in Patterns and
// WatchPatterns, it is a pattern. That choice is the hub's.
//
// # Order and the replay seam
//
// A pattern is watched as a topic is (see "Order" and "The replay seam"
// at Transport), for every topic it matches, including topics first
// published to after WatchPatterns returned: from the moment
// WatchPatterns returns, every event one of whose topics matches a
// watched pattern reaches the sink, once (whatever number of its topics
// match, and whether or not some of them are watched too), in Seq order
// with all the other events the sink is handed. WatchPatterns is called
// before ReplayPatterns, which reports in Replay.Head the Seq up to which
// it read the history: the events of the matching topics at or below Head
// are in the replay (when newer than the resume point), those above reach
// the sink.
//
// # The matching topics and their bound
//
// The topics of a PatternQuery are its Topics and every topic of the
// history that matches one of its Patterns: a topic with retained events,
// or one whose lost events the transport still remembers (a topic it has
// forgotten may have matched: a transport that forgets topics counts what
// they lost as lost by the pattern, erring on the side of a reset). Their
// events are merged by Seq, an event of several of them once. The work is
// bounded by MaxTopics: the merge takes the retained events of at most
// that many topics. When more of the topics have events to give, the
// replay keeps to the newest events, those after a Seq chosen so that at
// most MaxTopics topics have events after it (the topics published to
// last), and sets Replay.TopicsCapped; a resumption is then a reset (see
// Replay.Reset), since it cannot be served completely. What follows a
// reset stays whole, as for Replay: a page can be resumed from any of its
// events.
type PatternTransport interface {
	Transport

	// WatchPatterns tells the transport that a local subscriber follows
	// patterns: from the moment it returns, every event one of whose
	// topics matches one of them reaches the sink (see "Order and the
	// replay seam"). Calls are counted as Watch's are: each WatchPatterns
	// that returned nil is matched by one UnwatchPatterns of the same
	// patterns. A transport may deliver every event whatever is watched,
	// as the memory transport does; one that carries only the watched
	// topics between nodes must carry the matching ones too.
	WatchPatterns(ctx context.Context, patterns []string) error

	// UnwatchPatterns undoes one WatchPatterns of the same patterns. It
	// does not wait for the network.
	UnwatchPatterns(patterns []string)

	// ReplayPatterns returns the retained events that a new subscription
	// to q's topics and patterns must be sent before live events, as
	// Replay does for topics (see PatternQuery and "The matching topics
	// and their bound"), or the newest events of each of its topics
	// (PatternQuery.LatestPerTopic). With neither Patterns nor
	// LatestPerTopic, it answers as Replay would, within MaxTopics.
	ReplayPatterns(ctx context.Context, q PatternQuery) (Replay, error)
}

// PatternQuery describes what a new subscription with patterns, or with
// a latest-per-topic replay, needs from the history. Its ReplayQuery
// fields mean what they mean for Replay, applied to all the topics of the
// query (its Topics and the topics matching its Patterns): Resume and
// LastEventID, Latest (without Resume), ResetLatest and MaxBytes (pages,
// each resuming from the last event of the one before, with the same
// Patterns, MaxTopics and LatestPerTopic).
type PatternQuery struct {
	ReplayQuery

	// Patterns the subscription follows besides ReplayQuery.Topics.
	Patterns []string

	// MaxTopics, when positive, is the most topics whose events are
	// merged (the route's max_topics); see "The matching topics and their
	// bound" at PatternTransport. 0: no bound.
	MaxTopics int

	// LatestPerTopic, when positive, asks for the newest LatestPerTopic
	// retained events of each topic of the query (of at most MaxTopics
	// topics: those published to last), in Seq order, an event of several
	// topics once: the replay_latest of a first connection. Latest and
	// ResetLatest play no part then, and no replay of it is a reset. With
	// Resume, it gives those of the events that are newer than
	// LastEventID (from the start when the id is not one of the hub's
	// current epoch): the pages after the first of such a replay, which
	// resume from the last event of the page before. A hub never sets it
	// with a client's own last event id: a resumption is served in full,
	// or reset.
	LatestPerTopic int
}

// Sink receives a hub's events from its transport. It never calls back
// into the transport from inside its methods.
type Sink interface {
	// Deliver hands ev to the local subscribers of its topics (the hub
	// holds it once in its delivery window and wakes their writers) and
	// returns how many distinct subscribers it was queued for.
	Deliver(ev *Event) int

	// Interrupt ends the local streams that follow any of topics, or every
	// stream of the hub when topics is nil, with a retry hint: their
	// clients reconnect with their last event id and get, through Replay,
	// what they missed or a reset. A transport calls it when it cannot
	// deliver events in order (a gap) or has lost the history (a new
	// epoch); reason labels the count in the metrics ("gap", "epoch").
	Interrupt(topics []string, reason string)

	// Evicted tells that ev has left the history (by count, age or size,
	// or because the limits shrank), after ev.Evicted reports true; it
	// may not have been delivered yet (a history of 0 evicts an event as
	// it is stored). A local stream that has not been sent ev and no
	// longer finds it among the hub's newest events cannot be served in
	// full: the hub ends it as slow, and its client resumes with a reset.
	// A transport that keeps its history in this process calls it for
	// every event it evicts; one whose history lives elsewhere (Redis)
	// need not: its streams find out when they next read the history.
	Evicted(ev *Event)

	// Disconnect ends the local streams that match d, each with a
	// "disconnect" event, and returns how many it ended. A transport calls
	// it from Transport.Disconnect on this node, and when another node's
	// request reaches it.
	Disconnect(d Disconnect) int
}

// Disconnect asks that the streams of a hub matching it end (an
// administrator's revocation; SPEC section 10). One of Topic and Subject
// is set.
type Disconnect struct {
	// Topic is a topic pattern (see package access): a stream following
	// a topic that it matches ends.
	Topic string `json:"topic,omitempty"`
	// Subject ends the streams whose subject is this value: the value
	// of their route's max_streams_per placeholder, or else the "sub" of
	// their token.
	Subject string `json:"subject,omitempty"`
}

// PublishRequest is what a publisher asks of Publish.
type PublishRequest struct {
	// Messages to publish, in order; at least one.
	Messages []Message
	// Key, when not empty, is the publisher's Idempotency-Key.
	Key string
	// Fingerprint identifies what was asked under Key: a request with the
	// same key and another fingerprint is refused with ErrKeyMismatch.
	Fingerprint string
	// Offset is the position of Messages[0] among the events published
	// under Key: 0 for a plain request, more for the later events of a
	// streaming publish.
	Offset int
}

// IdempotencyTTL is how long a transport remembers an idempotency key
// (unless the budget makes it forget the key earlier; see Limits).
const IdempotencyTTL = 24 * time.Hour

// IdempotencyCountedPositions is how many of the first positions of an
// idempotency key have their subscriber counts recorded: as many as a
// request that is not a stream may publish (a JSON array). A repeated
// receipt at a later position has Subscribers 0.
const IdempotencyCountedPositions = 1000

// Message is an event as a publisher asks for it, before it has an id.
type Message struct {
	// Topics the event is published to: valid, distinct, at least one.
	Topics []string
	// Type is the event type; empty means the default type "message".
	Type string
	// Data is the payload, valid UTF-8.
	Data string
	// Retry, when not negative, is sent as the event's own retry field, in
	// milliseconds.
	Retry int64
}

// Receipt tells a publisher what became of one published message.
type Receipt struct {
	// ID is the event's id.
	ID string
	// Topics the event was published to.
	Topics []string
	// Subscribers is the number of distinct local subscribers the event
	// was queued for. A repeated receipt has the count recorded when the
	// event was published, for the first IdempotencyCountedPositions
	// positions of its key, and 0 after.
	Subscribers int
	// Repeated is set when the event was published by an earlier request
	// with the same idempotency key: nothing was published now.
	Repeated bool
}

// Event is a published event, shared read-only by the history, the hub's
// delivery window and every stream that is writing it.
type Event struct {
	// Seq is the event's position in the hub's sequence; it increases by
	// one with every event published to the hub.
	Seq uint64
	// ID is the event's id as clients see it.
	ID string
	// Topics the event was published to.
	Topics []string
	// Time is when the event was published.
	Time time.Time
	// Wire is the event serialised for the stream, blank line included.
	Wire []byte

	evicted atomic.Bool
}

// MarkEvicted records that the event has left its hub's history; a
// transport calls it before Sink.Evicted.
func (e *Event) MarkEvicted() { e.evicted.Store(true) }

// Evicted reports whether the event has left its hub's history, as far as
// the transport tells (see Sink.Evicted).
func (e *Event) Evicted() bool { return e.evicted.Load() }

// eventOverhead approximates what an event keeps alive besides its wire
// bytes, id and topic names: the Event and its topic list, and a history's
// record of it.
const eventOverhead = 160

// Size is what the event counts for in a hub's history_max_bytes:
// everything it keeps alive, its wire bytes and its topic names included.
func (e *Event) Size() int64 {
	n := len(e.Wire) + len(e.ID) + eventOverhead
	for _, t := range e.Topics {
		n += len(t) + 24 // the name and its slot in the lists that hold it
	}
	return int64(n)
}

// NewEvent builds and serialises the event that msg becomes at seq. It
// copies the topic names, so that the event never keeps alive the request
// they were read from.
func NewEvent(epoch string, seq uint64, msg Message, now time.Time) *Event {
	id := FormatID(epoch, seq)
	topics := make([]string, len(msg.Topics))
	for i, t := range msg.Topics {
		topics[i] = strings.Clone(t)
	}
	return &Event{
		Seq:    seq,
		ID:     id,
		Topics: topics,
		Time:   now,
		Wire:   AppendEvent(nil, id, msg.Type, msg.Retry, msg.Data),
	}
}

// ReplayQuery describes what a new subscription needs from the history.
type ReplayQuery struct {
	// Topics the subscription follows.
	Topics []string
	// Resume is set when the client sent a last event id.
	Resume bool
	// LastEventID is the id the client sent, as sent.
	LastEventID string
	// Latest, without Resume, asks for up to this many of the newest
	// retained events of Topics, none older than an event any of the
	// topics has lost (see Replay.Reset).
	Latest int
	// ResetLatest, when positive, bounds the events of a reset (see
	// Replay.Reset) to this many of the newest.
	ResetLatest int
	// MaxBytes, when positive, makes the replay a page: Events holds the
	// oldest events of the replay, in order, whose wire bytes together are
	// at most MaxBytes, and always at least one; More is set when the
	// replay has events after them, which the caller reads with a query
	// that resumes from the page's last event. 0: the whole replay at once.
	MaxBytes int
}

// Replay is what a new subscription is sent before live events.
type Replay struct {
	// Events to send, in increasing Seq order, without duplicates.
	Events []*Event
	// Reset is set when a resumption cannot be served completely (the id
	// is malformed, unknown, from another incarnation of the hub, or events
	// after it were evicted). Events then holds the retained events of the
	// topics newer than the newest event that any of them has lost, the
	// newest ReplayQuery.ResetLatest of them if that is set: what follows
	// a reset is whole, and a page of it can be resumed from any of its
	// events.
	Reset bool
	// Head is the Seq of the hub's newest event when the history was read:
	// live events at or below it are already covered by Events.
	Head uint64
	// HeadID is the id of Head, a valid resumption point for the topics
	// when Events is empty.
	HeadID string
	// More is set when Events is a page (ReplayQuery.MaxBytes) that the
	// replay goes on after: the events of the topics newer than the
	// page's last event are to be read with a query resuming from it.
	// Without More, Events covers the topics up to Head.
	More bool
	// TopicsCapped is set by PatternTransport.ReplayPatterns when more
	// topics of the query had events to give than PatternQuery.MaxTopics:
	// Events keeps to the newest of them (see "The matching topics and
	// their bound" at PatternTransport).
	TopicsCapped bool
}

// Limits bound a hub's history and its idempotency records.
type Limits struct {
	// Events is the most events kept per topic; 0 keeps none.
	Events int
	// TTL, when positive, is the age after which an event is dropped.
	TTL time.Duration
	// MaxBytes bounds the Size of all retained events of the hub together;
	// the oldest go first.
	MaxBytes int64
	// IdempotencyMaxBytes bounds the bytes of the hub's idempotency
	// records together, counted as they cost; the keys used first are
	// forgotten first (see "# Idempotency" at Transport). 0 stands for
	// MaxBytes / 8, the hub's default.
	IdempotencyMaxBytes int64
}

// IdempotencyBudget returns the most bytes the hub's idempotency records
// may hold: IdempotencyMaxBytes, or MaxBytes / 8 when that is 0.
func (l Limits) IdempotencyBudget() int64 {
	if l.IdempotencyMaxBytes > 0 {
		return l.IdempotencyMaxBytes
	}
	return l.MaxBytes / 8
}

// Stats describe a hub's history, its idempotency records and its
// transport's state.
type Stats struct {
	// Topics is the number of topics with retained events.
	Topics int `json:"topics"`
	// Events is the number of retained events.
	Events int `json:"events"`
	// Bytes is the Size of the retained events.
	Bytes int64 `json:"bytes"`
	// Head is the Seq of the newest event published.
	Head uint64 `json:"head"`
	// Epoch is the epoch of the hub's ids.
	Epoch string `json:"epoch,omitempty"`
	// Idempotency describes the hub's idempotency records.
	Idempotency IdempotencyStats `json:"idempotency"`
	// State is the transport's own state: whether it can serve now and
	// what it has been through.
	State State `json:"-"`
}

// IdempotencyStats describe a hub's idempotency records.
type IdempotencyStats struct {
	// Keys is the number of idempotency keys the hub remembers.
	Keys int `json:"keys"`
	// Bytes is what their records cost, as Limits.IdempotencyMaxBytes
	// counts it.
	Bytes int64 `json:"bytes"`
}

// State is a transport's health, for the admin API and the metrics.
type State struct {
	// Up is whether the transport can publish and subscribe now.
	Up bool `json:"up"`
	// LastError is the error that made the transport unavailable, while
	// it is; empty once it is up again.
	LastError string `json:"last_error,omitempty"`
	// WatchedTopics is the number of topics the transport watches for
	// this node.
	WatchedTopics int `json:"watched_topics"`
	// WatchedPatterns is the number of patterns the transport watches
	// for this node (PatternTransport.WatchPatterns).
	WatchedPatterns int `json:"watched_patterns,omitempty"`
	// Resyncs counts, by reason, the times the transport had to interrupt
	// streams or re-read the history (see Sink.Interrupt).
	Resyncs map[string]uint64 `json:"resyncs,omitempty"`
	// Detail holds transport-specific figures (e.g. the Redis address).
	Detail map[string]any `json:"detail,omitempty"`
}

// Errors of a transport.
var (
	// ErrClosed is returned by a transport that has been closed.
	ErrClosed = errors.New("transport closed")
	// ErrUnavailable is wrapped by the errors of a transport that cannot
	// reach what it depends on; the hub answers publishes with 503 and
	// new subscriptions with a retry hint.
	ErrUnavailable = errors.New("transport unavailable")
	// ErrKeyMismatch refuses a publish whose idempotency key was used for
	// another request.
	ErrKeyMismatch = errors.New("idempotency key already used for another request")
	// ErrKeyInFlight refuses a publish whose idempotency key is used by a
	// request still in progress.
	ErrKeyInFlight = errors.New("a request with this idempotency key is still in progress")
	// ErrMaybePublished is wrapped by the error of a publish whose outcome
	// is unknown (a shared store that did not answer after the request was
	// sent): its events may have been stored and delivered, and only a
	// retry with the same idempotency key is safe.
	ErrMaybePublished = errors.New("the events may have been published; retry with the same Idempotency-Key")
)
