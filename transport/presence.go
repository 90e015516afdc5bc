package transport

import "context"

// PresenceTransport is a Transport that also counts who is there (SPEC
// section 11, presence): the distinct members of each topic, across every
// node that shares the hub. It is optional: a hub checks for it with a
// type assertion. Everything Transport says holds for its methods too.
//
// # Joins and leaves
//
// The hub counts its own streams and calls Join when a member gets its
// first stream on a topic on this node, and Leave when the member has had
// none there for the hub's presence grace: for one (topic, member), calls
// alternate, Join first. They do not wait for the network; a transport
// applies them in the order they were made. A member is present on a topic
// while at least one node has joined it there and not left.
//
// # Changes and versions
//
// A change is a member's arrival on a topic where no node had it (a join)
// or its departure from the last node that had it (a leave); a Join or
// Leave that changes no count is not a change. Every change of the hub
// gets the next Version of the hub's presence (1, 2, 3, ...; one sequence
// for all topics), and reaches the PresenceSink of every node, in Version
// order, each once: the sink can tell a change it missed by a gap in the
// versions. A node that ends without calling Leave (a crash) has its
// members leave all the same, after an expiry the transport documents.
//
// # The snapshot seam
//
// Presence reads a topic's members and the Version of the last change
// applied to them, atomically. Changes with a Version above it reach the
// sink after Presence returns, or reached it before; changes at or below
// it are in the snapshot. A stream that shows the snapshot and then the
// changes above its Version neither misses a change nor applies one twice.
type PresenceTransport interface {
	Transport

	// Join tells that this node has a stream of member on topic (see
	// "Joins and leaves").
	Join(topic, member string)

	// Leave undoes this node's Join of member on topic.
	Leave(topic, member string)

	// Presence returns the number of distinct members of topic, up to max
	// of them (in byte order), and the Version of the hub's presence that
	// the snapshot reflects.
	Presence(ctx context.Context, topic string, max int) (PresenceSnapshot, error)

	// PresenceCounts returns the number of distinct members of each of
	// topics, in their order.
	PresenceCounts(ctx context.Context, topics []string) ([]int, error)
}

// PresenceSink receives the presence changes of a hub (see
// PresenceTransport). A hub's Sink that also implements it gets them; a
// transport calls it as it calls Sink.Deliver: never concurrently for one
// hub, never after Close returns, and the sink never calls back into the
// transport from inside it.
type PresenceSink interface {
	// PresenceChanged hands over one change.
	PresenceChanged(c PresenceChange)
}

// PresenceResyncSink is a PresenceSink that is also told when its
// transport may have missed changes: its connection to the other nodes was
// lost, or it dropped messages it could not keep up with. The sink then no
// longer trusts what it built from the changes (a hub ends the streams of
// its watchers, whose clients get fresh snapshots). A transport calls it as
// it calls PresenceChanged.
type PresenceResyncSink interface {
	PresenceSink

	// PresenceMissed tells that changes may have been missed.
	PresenceMissed()
}

// PresenceChange is a member's arrival on, or departure from, a topic.
type PresenceChange struct {
	// Topic is the topic (or the pattern, for pattern streams).
	Topic string `json:"topic"`
	// Member is the member's value.
	Member string `json:"member"`
	// Join is true for an arrival, false for a departure.
	Join bool `json:"join,omitempty"`
	// Version is the change's place in the hub's presence sequence.
	Version uint64 `json:"version"`
}

// PresenceSnapshot is who is on a topic at one Version.
type PresenceSnapshot struct {
	// Count is the exact number of distinct members.
	Count int
	// Members lists at most the max asked for, in byte order.
	Members []string
	// Version is that of the last change the snapshot reflects.
	Version uint64
}
