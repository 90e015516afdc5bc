package caddysse

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ssehub/caddy-sse/transport"
)

// How much a stream takes at once: a round from the delivery window,
// written with one flush (a piece of at most batchSize bytes: what a
// writer blocked on its client holds is a round's list of the hub's shared
// bytes and the piece being written), and a page of the history
// (pageBytes, see hub.go).
const (
	roundBytes = batchSize
	// maxRounds is how many rounds a writer writes before it lets the
	// others that were woken go first.
	maxRounds = 16
)

// maxSparePieces is the largest list of parts a stream keeps between
// writes; a larger one is given back to the garbage collector.
const maxSparePieces = 64

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
	lastID     string      // the client's last event id
	deadline   *time.Timer // ends the stream at its max_age; nil without
	expiryAt   int         // its slot in its route's expiries (guarded by their lock); -1: none

	ctx    context.Context // of its reads of the history
	cancel context.CancelFunc
	shared net.Conn  // over HTTP/2, the TCP connection under the stream, when known
	epoch  string    // of the ids of its position
	single [1][]byte // the parts of a one-piece send, without allocating
	piece  [][]byte  // the parts of the piece being written
}

// newStream returns the stream of sub on route, writing to out.
func newStream(route *Subscribe, sub *subscriber, out output, r *http.Request, began time.Time) *stream {
	return &stream{route: route, sub: sub, out: out, began: began, remoteAddr: r.RemoteAddr, ctx: r.Context(),
		shared: sharedConn(r), expiryAt: -1}
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
func (st *stream) serve(w http.ResponseWriter, r *http.Request, rep transport.Replay, lastID string, expires time.Time) {
	h := st.route
	st.lastID = lastID
	st.startDeadline(expires)
	limitSendBuffer(r, h.SendBuffer)
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
	// the request's context ends with this handler, and its values would
	// keep net/http's buffers of the connection alive
	st.ctx, st.cancel = context.WithCancel(context.Background())
	go func() {
		reason := st.loop(nil)
		out.end(reason != endSlow && reason != endClient)
		st.end(reason)
	}()
}

// startDeadline ends the stream after a random 80-100% of max_age, if
// set, and when its token expires, if it has one (its route's expiries
// do, with one timer for all its streams).
func (st *stream) startDeadline(expires time.Time) {
	if !expires.IsZero() {
		st.route.expireAt(st, expires)
	}
	maxAge := time.Duration(st.route.MaxAge)
	if maxAge <= 0 {
		return
	}
	lifetime := maxAge * 4 / 5
	lifetime += rand.N(maxAge - lifetime + 1)
	sub := st.sub
	st.deadline = time.AfterFunc(lifetime, func() { sub.finish(endMaxAge) })
}

// start sends the headers, the retry hint, the reset event if the
// resumption is incomplete, and the first page of the replay, and
// flushes; the stream's position is then the end of that page, or the
// hub's head when it was the whole replay. When nothing is replayed, an
// id-only block sets the client's last event id to the hub's head, so
// that a client that reconnects before its first event still resumes
// from where it connected.
func (st *stream) start(w http.ResponseWriter, retryMS int64, rep transport.Replay, lastID, resetEvent string) error {
	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	st.epoch, _, _ = transport.ParseID(rep.HeadID)
	st.sub.seam = rep.Head
	pos := rep.Head
	if rep.More {
		pos = rep.Events[len(rep.Events)-1].Seq
		st.sub.replay(true)
	}
	st.sub.pos.Store(pos)

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
	b = append(b, st.sub.feed.take()...) // the presence snapshots, without ids
	*bp = b
	parts := make([][]byte, 0, 1+len(rep.Events))
	parts = append(parts, b)
	for _, ev := range rep.Events {
		parts = append(parts, ev.Wire)
	}
	err := st.send(parts)
	st.sub.idle()
	if rep.More {
		st.sub.signal() // the replay goes on: its next page, at once
	}
	return err
}

// resetData is the payload of the reset event.
type resetData struct {
	LastEventID string `json:"last_event_id"`
}

// loop writes the stream's events until it ends, and says why it ended.
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
		if err := st.pump(); err != nil { // not delivered
			return failedWrite(st.sub)
		}
		if reason := st.sub.endReason(); reason != endNone {
			if reason != endSlow && reason != endClient {
				_ = st.sendOne(st.route.endWords(reason, st.lastSent()))
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
	if st.deadline != nil {
		st.deadline.Stop()
	}
	st.route.release(st)
	if st.cancel != nil {
		st.cancel()
	}
	st.route.streams.remove(st)
	st.sub.hub.Unsubscribe(st.sub, reason)
	if ce := st.route.logger.Check(zapcore.DebugLevel, "stream closed"); ce != nil {
		ce.Write(zap.String("remote_addr", st.remoteAddr), zap.String("hub", st.sub.hub.name),
			zap.Strings("topics", st.sub.topics), zap.Duration("duration", time.Since(st.began)),
			zap.Stringer("reason", reason))
	}
}

// pump writes what the stream has to send: the events of its topics after
// its position, in rounds of at most roundBytes with one flush each, until
// it has caught up (or, after maxRounds, has let the other woken writers
// go first); or a heartbeat, when one is due and there was nothing else.
func (st *stream) pump() error {
	s := st.sub
	s.take()
	sent := false
	for range maxRounds {
		if s.endReason() != endNone {
			s.idle()
			return nil
		}
		more, err := st.round()
		if err != nil {
			s.idle()
			return err
		}
		if !more {
			if !sent && s.beat.Swap(false) {
				err = st.sendOne(heartbeat)
			}
			s.idle()
			return err
		}
		sent = true
	}
	s.idle()
	s.wakeUp() // more to write, in its turn
	return nil
}

// round takes the stream's next events (next) and writes them, and
// reports whether there may be more.
func (st *stream) round() (bool, error) {
	pp := partsPool.Get().(*[][]byte)
	parts, live, replayed, more := st.next((*pp)[:0])
	if st.sub.feed != nil {
		if b := st.sub.feed.take(); b != nil {
			parts = append(parts, b) // presence events, without ids: anywhere between events
		}
	}
	var err error
	if len(parts) > 0 {
		st.sub.beat.Store(false)
		if err = st.send(parts); err == nil {
			st.sub.hub.wrote(live, replayed)
		}
	}
	clear(parts)
	*pp = parts[:0]
	partsPool.Put(pp)
	return more, err
}

// next appends to parts the stream's next events after its position, and
// moves its position past them: from the hub's delivery window when it
// holds every event after the position, else a page of the history. It
// returns how many came from each, and whether there may be more.
func (st *stream) next(parts [][]byte) (_ [][]byte, live, replayed int, more bool) {
	s := st.sub
	parts, live, ok := s.hub.backlog.take(s, parts, roundBytes)
	if ok {
		return parts, live, 0, live > 0
	}
	parts, replayed, more = st.page(parts)
	return parts, 0, replayed, more
}

// page appends a page of the history after the stream's position to
// parts, and moves its position past it (to the hub's head, when the page
// ends the replay). A history that no longer has every event after the
// position drops the stream as slow; one that cannot be read now (a
// transport unavailable for a moment) is read again at the next wake-up
// (the sweeper's heartbeat wakes it).
func (st *stream) page(parts [][]byte) (_ [][]byte, n int, more bool) {
	s := st.sub
	s.paging.Store(true)
	defer s.paging.Store(false)
	pos := s.pos.Load()
	q := transport.ReplayQuery{
		Topics:      s.topics,
		Resume:      true,
		LastEventID: transport.FormatID(st.epoch, pos),
		MaxBytes:    pageBytes,
	}
	var rep transport.Replay
	var err error
	if s.byPatterns {
		rep, err = s.hub.patternT.ReplayPatterns(st.ctx, transport.PatternQuery{ReplayQuery: q,
			Patterns: s.patterns, MaxTopics: s.maxTopics, LatestPerTopic: s.latest})
	} else {
		rep, err = s.hub.transport.Replay(st.ctx, q)
	}
	switch {
	case errors.Is(err, transport.ErrUnavailable) || st.ctx.Err() != nil:
		return parts, 0, false
	case errors.Is(err, transport.ErrClosed): // the hub is closing: its config has stopped
		s.finish(endShutdown)
		return parts, 0, false
	case err != nil:
		st.route.logger.Error("reading the history for a stream", zap.String("hub", s.hub.name), zap.Error(err))
		s.finish(endResync)
		return parts, 0, false
	case rep.Reset:
		if s.finish(endSlow) {
			s.hub.dropSlow(s)
		}
		return parts, 0, false
	}
	// A latest-per-topic replay (replay_latest) is the newest events of
	// each topic as each page finds them: it stops at the seam, after
	// which every event comes whole, from the window or plain pages.
	latest := s.latest > 0
	cut := false
	for _, ev := range rep.Events {
		if latest && ev.Seq > s.seam {
			cut = true
			break
		}
		if ev.Seq > pos {
			parts = append(parts, ev.Wire)
			n++
		}
	}
	var next uint64
	switch {
	case latest && (cut || !rep.More):
		next = max(pos, s.seam)
	case rep.More:
		next = rep.Events[len(rep.Events)-1].Seq
	default:
		next = max(pos, rep.Head)
	}
	s.pos.Store(next)
	if next >= s.seam {
		s.latest = 0
		s.replay(false)
	}
	return parts, n, next > pos
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
	if cap(piece) > maxSparePieces {
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

// lastSent returns the id of the stream's position, from which its client
// resumes with nothing lost: the last event id it sent, or a later one
// that none of its topics' events precedes; the client's own before it
// has one.
func (st *stream) lastSent() string {
	pos := st.sub.pos.Load()
	if pos == noPosition || st.epoch == "" {
		return st.lastID
	}
	return transport.FormatID(st.epoch, pos)
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
