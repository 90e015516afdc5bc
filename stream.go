package caddysse

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ssehub/caddy-sse/transport"
)

// The life of an event. A publish (publish.go, or the admin API) decodes
// the request into messages and hands them to the hub's transport
// (Hub.Publish), which assigns ids, stores the events in the history and
// hands each, in id order, to the hub of every node (Hub.Deliver). The
// hub appends the event, serialised once, to the queue of every local
// subscriber of its topics (subscriber.enqueue) and wakes their writers
// through its wake gate, without waiting for any socket; a subscriber
// whose queue is full is dropped as slow. Each stream (below) runs its
// own writer, in the request's goroutine or, with hijack, in one of its
// own: it takes its whole queue at once and writes it in pieces of at
// most batchSize bytes and one flush (stream.pump), to the response or
// the connection it took over (output.go, hijack.go). The route's sweeper
// (streams.go) looks at every stream once a tick (stream.check): it sends
// heartbeats to silent streams and ends those whose writes stall.

// partsPool holds the lists of byte slices a stream sends at once.
var partsPool = sync.Pool{New: func() any {
	p := make([][]byte, 0, 16)
	return &p
}}

// heartbeat is the comment written to a silent stream.
var heartbeat = transport.AppendComment(nil, "")

// stream is one subscription's life, from the headers to its end: it
// writes its subscriber's events to its output, ends when its client
// leaves or when it is told to (subscriber.finish), and takes itself out
// of its hub and its route. Its writer is the only goroutine that writes
// to its output.
type stream struct {
	route *Subscribe // the route that opened it: its settings and its set of streams
	sub   *subscriber
	out   output

	began      time.Time
	remoteAddr string
	maxAge     *time.Timer // ends the stream at its max_age; nil without

	head   uint64    // live events up to this Seq were covered by the replay
	single [1][]byte // the parts of a one-piece send, without allocating
	piece  [][]byte  // the parts of the piece being written
}

// newStream returns the stream of sub on route, writing to out.
func newStream(route *Subscribe, sub *subscriber, out output, r *http.Request, began time.Time) *stream {
	return &stream{route: route, sub: sub, out: out, began: began, remoteAddr: r.RemoteAddr}
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

// serve writes the stream's start, then its events until it ends, and
// ends it. A stream whose connection is taken over (hijack) runs on in a
// goroutine of its own, and serve returns at once.
func (st *stream) serve(w http.ResponseWriter, r *http.Request, rep transport.Replay, lastID string) {
	h := st.route
	st.startMaxAge()
	if err := st.start(w, jittered(time.Duration(h.Retry)), rep, lastID, h.resetEventType()); err != nil {
		st.end(failedWrite(st.sub))
		return
	}
	st.sub.hub.wrote(0, len(rep.Events))
	out := st.out.(*responseOutput)
	out.direct(hardWriteDeadline(r, st.began))
	if h.Hijack && r.ProtoMajor == 1 {
		co, err := takeOver(w, r, out)
		if err == nil {
			st.runTakenOver(co)
			return
		}
		if ce := h.logger.Check(zapcore.DebugLevel, "could not take the connection over"); ce != nil {
			ce.Write(zap.Error(err))
		}
	}
	st.end(st.loop(r.Context().Done()))
}

// runTakenOver runs a stream whose connection was taken over, in a
// goroutine of its own, and lets net/http's goroutine go.
func (st *stream) runTakenOver(out *connOutput) {
	st.out = out
	st.sub.setOutput(out)
	go func() {
		reason := st.loop(nil)
		out.end(reason != endSlow && reason != endClient)
		st.end(reason)
	}()
}

// startMaxAge ends the stream after a random 80-100% of max_age, if set.
func (st *stream) startMaxAge() {
	maxAge := time.Duration(st.route.MaxAge)
	if maxAge <= 0 {
		return
	}
	lifetime := maxAge * 4 / 5
	lifetime += rand.N(maxAge - lifetime + 1)
	sub := st.sub
	st.maxAge = time.AfterFunc(lifetime, func() { sub.finish(endMaxAge) })
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

// loop writes live events until the stream ends, and says why it ended.
// done is closed when the client has gone (nil for a stream whose
// connection was taken over: its client's departure is noticed by the
// sweeper's probe, or by a failed write). A stream the server ends gets a
// final retry hint.
func (st *stream) loop(done <-chan struct{}) endReason {
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
		st.sub.hub.wrote(n, 0)
		if reason := st.sub.endReason(); reason != endNone {
			if reason != endSlow && reason != endClient {
				_ = st.finish(st.route.finalRetry())
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

// end takes an ended stream out of its route and its hub, which counts
// it, and logs it.
func (st *stream) end(reason endReason) {
	if st.maxAge != nil {
		st.maxAge.Stop()
	}
	st.route.streams.remove(st)
	st.sub.hub.Unsubscribe(st.sub, reason)
	if ce := st.route.logger.Check(zapcore.DebugLevel, "stream closed"); ce != nil {
		ce.Write(zap.String("remote_addr", st.remoteAddr), zap.String("hub", st.sub.hub.name),
			zap.Strings("topics", st.sub.topics), zap.Duration("duration", time.Since(st.began)),
			zap.Stringer("reason", reason))
	}
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

// finish writes a final retry hint before the stream ends.
func (st *stream) finish(retryMS int64) error {
	return st.sendOne(transport.AppendRetry(nil, retryMS))
}

// check is the stream's tick, run by its route's sweeper: a stream whose
// writes made no progress for write_timeout ends as slow, an ended one
// still writing after endWait has its write cut, one whose connection
// (taken over) the client has closed ends, and one that wrote nothing
// during a whole tick is sent a heartbeat.
func (st *stream) check(now int64) {
	s, h := st.sub, st.route
	stuck := s.stuckFor(now)
	if s.endReason() != endNone {
		if stuck >= endWait {
			s.interrupt() // Caddy's write timeouts may have moved the deadline again
		}
		return
	}
	if stuck >= time.Duration(h.WriteTimeout) {
		if s.finish(endSlow) {
			s.hub.dropSlow(s)
		}
		return
	}
	if ref := s.out.Load(); ref != nil {
		if co, ok := ref.output.(*connOutput); ok && co.peerClosed() {
			s.finish(endClient)
			return
		}
	}
	if h.Heartbeat > 0 && !s.wrote.Swap(false) {
		s.beat.Store(true)
		s.wakeUp()
	}
}
