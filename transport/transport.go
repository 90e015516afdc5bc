// Package transport defines how a caddy-sse hub stores its events and
// carries them between nodes. A transport assigns event ids, keeps each
// topic's history, replays it to resuming subscribers and delivers every
// published event, from any node, to the local hub. Transports are Caddy
// modules in the sse.transports namespace; the in-memory one is the default.
package transport

import (
	"context"
	"errors"
	"time"
)

// Transport stores the events of one hub and delivers them, in id order,
// to the hub on every node that shares it.
//
// A transport module is provisioned with the Caddy context of the config
// that declared its hub, but it may outlive that config: a hub survives
// reloads that keep its name and transport. A transport therefore opens its
// resources in Open, not in Provision, does not keep the provisioning
// context, and releases everything in Close.
type Transport interface {
	// Open binds the transport to the hub called name. From then on, every
	// event published to the hub, by this node or another one, is handed
	// to sink once, in increasing Seq order, never concurrently.
	Open(name string, limits Limits, sink Sink) error

	// Publish assigns ids to msgs, stores them in the history and delivers
	// them, in order. It returns once they are stored, with one receipt per
	// message. All messages must already be valid.
	Publish(ctx context.Context, msgs []Message) ([]Receipt, error)

	// Watch tells the transport that a local subscriber follows topics.
	// Live events of a watched topic reach the sink from the moment Watch
	// returns. Calls are counted: each Watch is matched by one Unwatch.
	Watch(ctx context.Context, topics []string) error

	// Unwatch undoes one Watch of the same topics.
	Unwatch(topics []string)

	// Replay returns the retained events that a new subscription must be
	// sent before live events (see ReplayQuery).
	Replay(ctx context.Context, q ReplayQuery) (Replay, error)

	// SetLimits changes the history limits in place; shrinking trims the
	// oldest events at once.
	SetLimits(limits Limits)

	// Stats reports the size of the history.
	Stats() Stats

	// Close releases the transport's resources. The sink is not called
	// after Close returns.
	Close() error
}

// Sink receives a hub's events from its transport.
type Sink interface {
	// Deliver queues ev for the local subscribers of its topics and returns
	// how many distinct subscribers it was queued for.
	Deliver(ev *Event) int
}

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
	// Event is the published event.
	Event *Event
	// Subscribers is the number of distinct local subscribers the event
	// was queued for.
	Subscribers int
}

// Event is a published event, shared read-only by the history and every
// subscriber queue that holds it.
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
}

// Size is what the event counts for in a hub's history_max_bytes.
func (e *Event) Size() int64 { return int64(len(e.Wire)) }

// NewEvent builds and serialises the event that msg becomes at seq.
func NewEvent(epoch string, seq uint64, msg Message, now time.Time) *Event {
	id := FormatID(epoch, seq)
	return &Event{
		Seq:    seq,
		ID:     id,
		Topics: msg.Topics,
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
	// retained events of Topics.
	Latest int
}

// Replay is what a new subscription is sent before live events.
type Replay struct {
	// Events to send, in increasing Seq order, without duplicates.
	Events []*Event
	// Reset is set when a resumption cannot be served completely (the id
	// is malformed, unknown, from another incarnation of the hub, or events
	// after it were evicted). Events then holds every retained event of
	// the topics.
	Reset bool
	// Head is the Seq of the hub's newest event when the history was read:
	// live events at or below it are already covered by Events.
	Head uint64
	// HeadID is the id of Head, a valid resumption point for the topics
	// when Events is empty.
	HeadID string
}

// Limits bound a hub's history.
type Limits struct {
	// Events is the most events kept per topic; 0 keeps none.
	Events int
	// TTL, when positive, is the age after which an event is dropped.
	TTL time.Duration
	// MaxBytes bounds the Size of all retained events of the hub together;
	// the oldest go first.
	MaxBytes int64
}

// Stats describe a hub's history.
type Stats struct {
	// Topics is the number of topics with retained events.
	Topics int `json:"topics"`
	// Events is the number of retained events.
	Events int `json:"events"`
	// Bytes is the Size of the retained events.
	Bytes int64 `json:"bytes"`
	// Head is the Seq of the newest event published.
	Head uint64 `json:"head"`
}

// ErrClosed is returned by a transport that has been closed.
var ErrClosed = errors.New("transport closed")
