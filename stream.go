package caddysse

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/ssehub/caddy-sse/transport"
)

// The life of an event. A publish (publish.go, or the admin API) decodes
// the request into messages and hands them to the hub's transport
// (Hub.Publish), which assigns ids, stores the events in the history and
// hands each, in id order, to the hub of every node (Hub.Deliver). The
// hub appends the event, serialised once, to the queue of every local
// subscriber of its topics (subscriber.enqueue) and wakes their writers
// through its wake gate, without waiting for any socket; a subscriber
// whose queue is full is dropped as slow. Each stream's writer (the loop
// below, in the request's goroutine or, with hijack, one of its own)
// takes its whole queue at once and writes it in pieces of at most
// batchSize bytes and one flush (stream.pump), to the response or the
// connection it took over (output.go, hijack.go). The handler's sweeper
// (streams.go) sends heartbeats to silent streams and ends those whose
// writes stall.

// partsPool holds the lists of byte slices a stream sends at once.
var partsPool = sync.Pool{New: func() any {
	p := make([][]byte, 0, 16)
	return &p
}}

// heartbeat is the comment written to a silent stream.
var heartbeat = transport.AppendComment(nil, "")

// stream writes one subscriber's events to its output.
type stream struct {
	out    output
	sub    *subscriber
	head   uint64    // live events up to this Seq were covered by the replay
	single [1][]byte // the parts of a one-piece send, without allocating
	piece  [][]byte  // the parts of the piece being written
}

// The header values of every stream, shared as Caddy shares its Server
// header: a handler that changes a header replaces its slice.
var (
	streamContentType  = []string{"text/event-stream"}
	streamCacheControl = []string{"no-cache, no-transform"}
	streamNo           = []string{"no"}
	streamNoSniff      = []string{"nosniff"}
)

// setStreamHeaders sets the headers of an event stream. no-transform keeps
// Caddy's encode handler (and proxies) from compressing the stream, and
// X-Accel-Buffering keeps nginx from holding it back.
func setStreamHeaders(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = streamContentType
	h["Cache-Control"] = streamCacheControl
	h["X-Accel-Buffering"] = streamNo
	h["X-Content-Type-Options"] = streamNoSniff
	delete(h, "Content-Length")
}

// start sends the headers, the retry hint, the reset event if the
// resumption is incomplete, and the replayed events, and flushes. When
// nothing is replayed, an id-only block sets the client's last event id
// to the hub's head, so that a client that reconnects before its first
// event still resumes from where it connected.
func (st *stream) start(w http.ResponseWriter, retryMS int64, rep transport.Replay, lastID, resetEvent string) error {
	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	st.head = rep.Head

	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b := transport.AppendRetry((*bp)[:0], retryMS)
	if rep.Reset && resetEvent != "" {
		data, _ := json.Marshal(resetData{LastEventID: lastID})
		b = transport.AppendEvent(b, "", resetEvent, -1, string(data))
	}
	if len(rep.Events) == 0 {
		b = append(b, "id: "...)
		b = append(b, rep.HeadID...)
		b = append(b, "\n\n"...)
	}
	*bp = b
	parts := make([][]byte, 0, 1+len(rep.Events))
	parts = append(parts, b)
	for _, ev := range rep.Events {
		parts = append(parts, ev.Wire)
	}
	err := st.send(parts)
	st.sub.idle()
	return err
}

// resetData is the payload of the reset event.
type resetData struct {
	LastEventID string `json:"last_event_id"`
}

// pump sends everything queued, or a heartbeat if one is due and there is
// nothing else, in one send. It returns the number of events sent.
func (st *stream) pump() (int, error) {
	q := st.sub.take()
	n, err := st.sendQueue(q)
	st.sub.recycle(q)
	st.sub.idle()
	return n, err
}

func (st *stream) sendQueue(q []*transport.Event) (int, error) {
	for len(q) > 0 && q[0].Seq <= st.head {
		q = q[1:] // covered by the replay
	}
	if len(q) == 0 {
		if !st.sub.beat.Swap(false) {
			return 0, nil
		}
		return 0, st.sendOne(heartbeat)
	}
	st.sub.beat.Store(false)
	if len(q) == 1 {
		return 1, st.sendOne(q[0].Wire)
	}
	pp := partsPool.Get().(*[][]byte)
	parts := (*pp)[:0]
	for _, ev := range q {
		parts = append(parts, ev.Wire)
	}
	err := st.send(parts)
	clear(parts)
	*pp = parts[:0]
	partsPool.Put(pp)
	return len(q), err
}

// sendOne sends one piece of the stream.
func (st *stream) sendOne(p []byte) error {
	st.single[0] = p
	err := st.send(st.single[:])
	st.single[0] = nil
	return err
}

// send writes parts in pieces of at most batchSize bytes, then flushes.
// It counts the pieces in the subscriber, so that the sweeper can tell a
// write that makes no progress from one that does.
func (st *stream) send(parts [][]byte) error {
	st.sub.wrote.Store(true)
	piece, size := st.piece[:0], 0
	var err error
	for _, p := range parts {
		for len(p) > 0 && err == nil {
			n := min(len(p), batchSize-size)
			piece, size, p = append(piece, p[:n]), size+n, p[n:]
			if size == batchSize {
				err = st.writePiece(piece)
				piece, size = piece[:0], 0
			}
		}
	}
	if err == nil && size > 0 {
		err = st.writePiece(piece)
	}
	clear(piece[:cap(piece)])
	if cap(piece) > maxSpareQueue {
		piece = nil // an idle stream keeps no large list
	}
	st.piece = piece[:0]
	if err != nil {
		return err
	}
	return st.out.flush()
}

func (st *stream) writePiece(piece [][]byte) error {
	st.sub.pieces.Add(1)
	return st.out.write(piece)
}

// loop writes live events until the stream ends, and says why it ended.
// done is closed when the client has gone (nil for a stream whose
// connection was taken over: its client's departure is noticed by the
// sweeper's probe, or by a failed write). A stream the server ends gets a
// final retry hint.
func (h *Subscribe) loop(st *stream, done <-chan struct{}) endReason {
	for {
		select {
		case <-done:
			return endClient
		case <-st.sub.wake:
		}
		n, err := st.pump()
		if err != nil { // not delivered
			return failedWrite(st.sub)
		}
		h.hub.counters.delivered.Add(uint64(n))
		if reason := st.sub.endReason(); reason != endNone {
			if reason != endSlow && reason != endClient {
				_ = st.finish(h.finalRetry())
			}
			return reason
		}
	}
}

// failedWrite says why a stream whose write failed ended: the reason it
// was ended for, if any (e.g. slow: its write was cut), else the client.
func failedWrite(sub *subscriber) endReason {
	if reason := sub.endReason(); reason != endNone {
		return reason
	}
	return endClient
}

// finish writes a final retry hint before the stream ends.
func (st *stream) finish(retryMS int64) error {
	return st.sendOne(transport.AppendRetry(nil, retryMS))
}
