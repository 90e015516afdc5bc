package redis

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// entry is an event as the scripts store and publish it (see scripts.go).
type entry struct {
	epoch  string
	seq    uint64
	time   int64 // unix milliseconds
	topics []string
	prevs  []uint64 // per topic, the seq of its previous event
	body   string   // the stream form without the id field
}

var errBadEntry = errors.New("malformed history entry")

// parseEntry parses an entry; its strings share s's memory.
func parseEntry(s string) (entry, error) {
	var e entry
	line, rest, ok := strings.Cut(s, "\n")
	if !ok {
		return e, errBadEntry
	}
	f := strings.Fields(line)
	if len(f) != 5 {
		return e, errBadEntry
	}
	var err error
	e.epoch = f[0]
	if e.seq, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return e, errBadEntry
	}
	if e.time, err = strconv.ParseInt(f[2], 10, 64); err != nil {
		return e, errBadEntry
	}
	n, err := strconv.Atoi(f[4])
	if err != nil || n < 1 || n > 1000 {
		return e, errBadEntry
	}
	e.topics = make([]string, n)
	e.prevs = make([]uint64, n)
	for i := range n {
		line, rest, ok = strings.Cut(rest, "\n")
		if !ok {
			return e, errBadEntry
		}
		p, t, ok := strings.Cut(line, " ")
		if !ok {
			return e, errBadEntry
		}
		if e.prevs[i], err = strconv.ParseUint(p, 10, 64); err != nil {
			return e, errBadEntry
		}
		e.topics[i] = t
	}
	e.body = rest
	return e, nil
}

// prevOf returns the seq of the event of topic before e.
func (e *entry) prevOf(topic string) (uint64, bool) {
	for i, t := range e.topics {
		if t == topic {
			return e.prevs[i], true
		}
	}
	return 0, false
}

// event builds the transport.Event of e. It copies what it keeps, so that
// the event does not keep the whole entry alive.
func (e *entry) event() *transport.Event {
	id := transport.FormatID(e.epoch, e.seq)
	wire := make([]byte, 0, len("id: \n")+len(id)+len(e.body))
	wire = append(wire, "id: "...)
	wire = append(wire, id...)
	wire = append(wire, '\n')
	wire = append(wire, e.body...)
	topics := make([]string, len(e.topics))
	for i, t := range e.topics {
		topics[i] = strings.Clone(t)
	}
	return &transport.Event{
		Seq:    e.seq,
		ID:     id,
		Topics: topics,
		Time:   time.UnixMilli(e.time),
		Wire:   wire,
	}
}

// sizeWithoutID is what an event of msg counts for in history_max_bytes,
// less the twice its id adds (once in its wire form, once as its id):
// the script adds that once it knows the id.
func sizeWithoutID(msg *transport.Message, bodyLen int) int64 {
	ev := transport.Event{Topics: msg.Topics}
	return ev.Size() + int64(len("id: \n")+bodyLen)
}
