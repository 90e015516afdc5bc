package caddysse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ssehub/caddy-sse/transport"
)

// A streaming publish is a POST whose body is a stream of events,
// text/event-stream or application/x-ndjson (see ingest_parse.go), read as
// it arrives: each event is published as soon as its block or line is
// complete, not when the body ends. The events that are complete in what
// one read brought are published together, as one batch, before the next
// read, which may wait for the publisher: a fast publisher gets large
// batches, a slow one (a model's tokens) has each event published at once.
//
// max_size bounds each event, not the stream; a stream that sends nothing
// for stream_timeout is ended (408); a malformed event ends the stream
// with a 400 naming it, the events before it staying published. When the
// body ends, the answer counts the events and gives the first and last
// ids; refusals mid-stream give the same figures. A body that breaks off
// (the client went away) has every complete event published, and an
// incomplete last one dropped.
//
// With an Idempotency-Key, the key is held for the whole stream; each
// batch is published under it at its position in the stream, with a
// fingerprint of what the request says besides its events (the format
// and the query's topics, type and retry). A transport records the
// receipts by position, so a stream sent again with the same key skips
// the events the earlier attempt published, and publishes the rest.

const (
	// DefaultStreamTimeout is how long a streaming publish may send
	// nothing before it is ended, by default.
	DefaultStreamTimeout = time.Minute
	// DefaultMaxStreams is the most streaming publishes a route reads at
	// once (and the admin API).
	DefaultMaxStreams = 100
)

// Bounds of what a stream holds in memory at once.
const (
	maxStreamBatch   = 256     // events published together
	maxBatchBytes    = 1 << 20 // data bytes published together (and one event more)
	streamBufferSize = 32 << 10
)

// drainWait is how long the rest of a stream refused before its end is
// read and discarded, so that the client, still sending, gets the answer
// before the connection closes.
const drainWait = time.Second

// ingestBufferPool holds the read buffers of streams, at their first size.
var ingestBufferPool = sync.Pool{New: func() any {
	b := make([]byte, streamBufferSize)
	return &b
}}

// publishOptions are what the route adds to a publish request.
type publishOptions struct {
	forced        []string // topics that replace the request's, if set
	maxSize       int64
	streamTimeout time.Duration
	streams       *publishStreams // the route's (or the admin API's) publishes in progress
	logger        *zap.Logger
	grants        *grants // the topics the request may publish to; nil: any
}

// writeIngestAnswer answers a stream whose body ended: 200 and its
// figures.
func writeIngestAnswer(w http.ResponseWriter, f *ingestFigures) {
	b := append(appendIngestFigures([]byte{'{'}, f), "}\n"...)
	writeJSONBytes(w, http.StatusOK, b)
}

// ingestEnvelope is what a stream's request says besides its events: the
// topics (the route's, or the query's), and the query's event type and
// retry, for the events that name none.
type ingestEnvelope struct {
	format ingestFormat
	topics []string // nil: none named
	forced bool     // topics are the route's: the events' own are ignored
	typ    string
	retry  int64
}

// readEnvelope reads a stream's envelope from the query string (the body
// holds the events). forced, when set, are the route's topics.
func readEnvelope(r *http.Request, format ingestFormat, forced []string) (ingestEnvelope, error) {
	env := ingestEnvelope{format: format}
	var f formFields
	if err := f.scan(r.URL.RawQuery, false); err != nil {
		return env, badRequest("reading the query: %v", err)
	}
	if f.hasData {
		return env, badRequest("the body of a %s publish holds the events: remove data from the query string", format)
	}
	d, err := f.draft()
	if err != nil {
		return env, err
	}
	if err := validateEventType(d.typ); err != nil {
		return env, badRequest("%v", err)
	}
	env.typ, env.retry = d.typ, d.retry
	switch {
	case forced != nil:
		env.topics, env.forced = forced, true
	case len(d.topics) > maxPublishTopics:
		return env, badRequest("%d topics given; at most %d are allowed", len(d.topics), maxPublishTopics)
	case len(d.topics) > 0:
		if env.topics, err = publishTopics(d.topics); err != nil {
			return env, badRequest("%v", err)
		}
	}
	return env, nil
}

// fingerprint identifies the envelope, for an idempotency key: a stream's
// events are not known when its first batch is published. It never equals
// the fingerprint of a request of events (which starts with their number,
// at least 1).
func (env *ingestEnvelope) fingerprint() string {
	fp := newFingerprinter(256)
	fp.uint(0)
	fp.string(env.format.String())
	if env.forced {
		fp.uint(1)
	} else {
		fp.uint(0)
	}
	fp.fields(env.topics, env.typ, env.retry)
	return fp.sum()
}

// serveIngest publishes a streaming body, event by event as it arrives,
// and answers it: 200 with the figures when the body ends. A refusal is
// returned, for the caller to answer: before the body is read, without
// figures; after, with them.
func serveIngest(w http.ResponseWriter, r *http.Request, hub *Hub, opts publishOptions, format ingestFormat, key string) *requestError {
	env, err := readEnvelope(r, format, opts.forced)
	if err != nil {
		return asRequestError(err)
	}
	st := newIngest(w, r, hub, opts, env, key)
	defer st.release()
	// An answer before the body's end (a refusal) must not wait for the
	// rest of the body to be read and discarded first (HTTP/1).
	_ = st.rc.EnableFullDuplex()
	if opts.streams != nil {
		if e := opts.streams.add(st); e != nil {
			// refused before any of the body is read: answered at once,
			// and the connection closed after, without waiting for a body
			// that may never end
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			_ = st.rc.SetReadDeadline(time.Now())
			return e
		}
		defer opts.streams.remove(st)
	}
	if idle, _ := caddyhttp.IdleTimeoutsFromContext(r.Context()); idle != nil {
		// Caddy's own idle timeout of request bodies (read_body_idle),
		// re-armed at each read: stream_timeout replaces it, and its
		// minimum rate, for this stream.
		defer idle.Override(st.timeout, 0)()
	} else {
		st.ownDeadline = true
	}
	e := st.run()
	st.logEnd(opts.logger, e)
	if e == nil {
		writeIngestAnswer(w, &st.pub.figures)
		return nil
	}
	if r.ProtoMajor == 1 {
		// What is left of the body is not read (and its chunked framing
		// may be cut short): the connection cannot serve another request.
		// Go's server would also panic reading the next request after
		// draining an unfinished full-duplex body itself
		// (golang.org/issue/68560).
		w.Header().Set("Connection", "close")
	}
	if st.readErr == nil {
		// refused while the client still sends: let it get the answer
		// before the connection closes, but do not wait long
		_ = st.rc.SetReadDeadline(time.Now().Add(drainWait))
	}
	refusal := *e
	refusal.figures = &st.pub.figures
	return &refusal
}

// ingest is one streaming publish being read.
type ingest struct {
	r       *http.Request
	rc      *http.ResponseController
	format  ingestFormat
	reader  *ingestReader
	bufp    *[]byte // the pooled buffer the reader started with
	pub     ingestPublisher
	started time.Time

	timeout     time.Duration
	ownDeadline bool        // no Caddy idle timeout to override: arm read deadlines here
	armedAt     time.Time   // when the read deadline was last moved
	readErr     error       // how the last read ended; io.EOF at the body's end
	stopping    atomic.Bool // the config is being stopped
}

func newIngest(w http.ResponseWriter, r *http.Request, hub *Hub, opts publishOptions, env ingestEnvelope, key string) *ingest {
	bufp := ingestBufferPool.Get().(*[]byte)
	st := &ingest{
		r:       r,
		rc:      http.NewResponseController(w),
		format:  env.format,
		bufp:    bufp,
		started: time.Now(),
		timeout: opts.streamTimeout,
	}
	st.pub = newIngestPublisher(r.Context(), hub, env, key)
	st.pub.grants = opts.grants
	st.reader = newIngestReader(env.format, *bufp, &st.pub, int(opts.maxSize))
	return st
}

// release gives the pooled read buffer back (a larger one that replaced
// it for long lines is left to the garbage collector).
func (st *ingest) release() {
	st.reader.lines.buf = nil
	ingestBufferPool.Put(st.bufp)
}

// run reads and publishes the stream until its body ends or it is
// refused.
func (st *ingest) run() *requestError {
	const maxReads = 1 << 62 // bounded by the body, the idle timeout and the config's life
	for range maxReads {
		if e := st.parseBuffered(); e != nil {
			// the events before the refused one stay published
			if fe := st.pub.flush(); fe != nil {
				return fe
			}
			return e
		}
		if e := st.pub.flush(); e != nil {
			return e
		}
		if st.readErr != nil {
			return st.ended()
		}
		st.read()
	}
	return nil
}

// parseBuffered parses the complete lines read so far, publishing a batch
// whenever it is full.
func (st *ingest) parseBuffered() *requestError {
	err := st.reader.parse(st.readErr == io.EOF, func() error {
		if !st.pub.full() {
			return nil
		}
		if e := st.pub.flush(); e != nil {
			return e
		}
		return nil
	})
	var le *lineError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le):
		// the event being read is refused
		re := parseRefusal(le.err)
		return &requestError{status: re.status, msg: fmt.Sprintf("event %d (line %d): %s",
			st.pub.position()+1, le.line, re.msg)}
	}
	return parseRefusal(err)
}

// parseRefusal is the answer to an error of the parser (or of the
// publishing of a batch): 413 for a line or an event over max_size, the
// refusal of a requestError as it is, else 400.
func parseRefusal(err error) *requestError {
	if errors.Is(err, errTooLarge) {
		return &requestError{status: http.StatusRequestEntityTooLarge, msg: err.Error()}
	}
	return asRequestError(err)
}

// read reads more of the body, once, and keeps how the read ended.
func (st *ingest) read() {
	if st.ownDeadline {
		st.arm(time.Now())
	}
	if st.stopping.Load() {
		st.readErr = errStopping
		return
	}
	_, st.readErr = st.reader.fill(st.r.Body)
}

// arm moves the read deadline to stream_timeout from now, at most every
// sixteenth of it: the stream is ended after stream_timeout of silence,
// or up to a sixteenth more.
func (st *ingest) arm(now time.Time) {
	if st.timeout <= 0 || now.Sub(st.armedAt) < st.timeout/16 {
		return
	}
	if err := st.rc.SetReadDeadline(now.Add(st.timeout + st.timeout/16)); err != nil {
		st.timeout = 0 // not supported: no idle bound
		return
	}
	st.armedAt = now
}

// stop ends the stream's reading at once; it runs on another goroutine.
func (st *ingest) stop() {
	st.stopping.Store(true)
	_ = st.rc.SetReadDeadline(time.Now())
}

// ended answers the end of the body: nil when it ended whole.
func (st *ingest) ended() *requestError {
	err := st.readErr
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case err == io.EOF:
		return nil
	case st.stopping.Load():
		return errStopping
	case errors.As(err, &mbe):
		return &requestError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(
			"the stream is longer than the %d bytes the server accepts in a request body (request_body max_size)", mbe.Limit)}
	case errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return &requestError{status: http.StatusRequestTimeout, msg: fmt.Sprintf(
			"nothing was received for %v (stream_timeout): the stream is ended; the events before were published", st.timeout)}
	}
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(
		"the body broke off before its end (%v): its complete events were published, an incomplete last one was not", err)}
}

// logEnd logs the end of the stream at debug level.
func (st *ingest) logEnd(logger *zap.Logger, e *requestError) {
	if logger == nil {
		return
	}
	ce := logger.Check(zapcore.DebugLevel, "streaming publish ended")
	if ce == nil {
		return
	}
	status, why := http.StatusOK, "end of body"
	if e != nil {
		status, why = e.status, e.msg
	}
	ce.Write(zap.String("format", st.format.String()), zap.Int("events", st.pub.figures.count),
		zap.Int("repeated", st.pub.figures.repeated), zap.Duration("duration", time.Since(st.started)),
		zap.Int("status", status), zap.String("why", why), zap.String("remote_addr", st.r.RemoteAddr))
}

// ingestPublisher is the eventSink of a stream: it gathers the events the
// parser completes into a batch, and publishes the batch when flushed.
type ingestPublisher struct {
	ctx         context.Context
	hub         *Hub
	key         string
	fingerprint string
	env         ingestEnvelope
	topics      []string // of an event that names none, unless forced
	grants      *grants  // the topics it may publish to; nil: any

	msgs  []transport.Message
	ends  []int  // where each message's data ends in arena
	arena []byte // the batch's data, one after the other

	typName  string // the last event type named, made a string once
	typBytes []byte

	figures ingestFigures // figures.count: the stream position of msgs[0]
}

func newIngestPublisher(ctx context.Context, hub *Hub, env ingestEnvelope, key string) ingestPublisher {
	s := ingestPublisher{
		// a client gone mid-stream cancels the request; the events it
		// completed are published all the same
		ctx:    context.WithoutCancel(ctx),
		hub:    hub,
		key:    key,
		env:    env,
		topics: env.topics,
	}
	if s.topics == nil {
		s.topics = []string{defaultTopic}
	}
	if key != "" {
		s.fingerprint = env.fingerprint()
	}
	return s
}

// event implements eventSink: it checks the event and adds it to the
// batch.
func (s *ingestPublisher) event(ev *ingestEvent) error {
	m := transport.Message{Topics: s.topics, Type: s.env.typ, Retry: s.env.retry}
	if ev.topics != nil && !s.env.forced {
		if len(ev.topics) > maxPublishTopics {
			return badRequest("%d topics given; at most %d are allowed", len(ev.topics), maxPublishTopics)
		}
		topics, err := publishTopics(ev.topics)
		if err != nil {
			return badRequest("%v", err)
		}
		m.Topics = topics
	}
	if e := s.grants.check(m.Topics); e != nil {
		s.hub.refusedFor(refusedForbidden)
		return e
	}
	if len(ev.typ) > 0 {
		typ, err := s.eventType(ev.typ)
		if err != nil {
			return err
		}
		m.Type = typ
	}
	if ev.retry >= 0 {
		m.Retry = ev.retry
	}
	s.arena = append(s.arena, ev.data...)
	s.ends = append(s.ends, len(s.arena))
	s.msgs = append(s.msgs, m)
	return nil
}

// eventType returns an event type named by an event, checked, made a
// string once for a run of events of one type.
func (s *ingestPublisher) eventType(b []byte) (string, error) {
	if s.typName != "" && bytes.Equal(b, s.typBytes) {
		return s.typName, nil
	}
	if err := validateEventTypeBytes(b); err != nil {
		return "", badRequest("%v", err)
	}
	s.typName = string(b)
	s.typBytes = append(s.typBytes[:0], b...)
	return s.typName, nil
}

// position returns the number of events of the stream read so far,
// published or not.
func (s *ingestPublisher) position() int { return s.figures.count + len(s.msgs) }

// full reports whether the batch is to be published before another event
// is added.
func (s *ingestPublisher) full() bool {
	return len(s.msgs) >= maxStreamBatch || len(s.arena) >= maxBatchBytes
}

// flush publishes the batch, if there is one. The batch's data is copied
// into one string that its messages share, which the events made of them
// do not keep.
func (s *ingestPublisher) flush() *requestError {
	if len(s.msgs) == 0 {
		return nil
	}
	data := string(s.arena)
	from := 0
	for i, end := range s.ends {
		s.msgs[i].Data = data[from:end]
		from = end
	}
	receipts, err := s.hub.Publish(s.ctx, transport.PublishRequest{
		Messages: s.msgs, Key: s.key, Fingerprint: s.fingerprint, Offset: s.figures.count})
	clear(s.msgs)
	s.msgs, s.ends, s.arena = s.msgs[:0], s.ends[:0], s.arena[:0]
	if cap(s.arena) > largeEventBuffer {
		s.arena = nil // a large batch's buffer is not kept: the stream may go quiet
	}
	if err != nil {
		return publishError(err)
	}
	f := &s.figures
	for _, rc := range receipts {
		if f.count == 0 {
			f.firstID = rc.ID
		}
		f.count++
		if rc.Repeated {
			f.repeated++
		}
	}
	if len(receipts) > 0 {
		f.lastID = receipts[len(receipts)-1].ID
	}
	return nil
}

// Interface guards
var _ eventSink = (*ingestPublisher)(nil)

// publishStreams are the publishes of a route (or of the admin API) in
// progress that a stop of its config must end: streaming publishes, and
// plain ones still reading their body.
type publishStreams struct {
	open    registry[stoppable]
	streams atomic.Int64 // streaming publishes among open
	max     int          // the most streaming publishes at once; 0: DefaultMaxStreams
}

// stoppable is a publish in progress that a stop ends.
type stoppable interface {
	stop()
}

// add registers a streaming publish, or returns why it is refused: the
// route's config is stopping, or it reads max streams already.
func (ps *publishStreams) add(st *ingest) *requestError {
	limit := ps.max
	if limit == 0 {
		limit = DefaultMaxStreams
	}
	if ps.streams.Add(1) > int64(limit) {
		ps.streams.Add(-1)
		return &requestError{status: http.StatusServiceUnavailable, retryAfter: 5, msg: fmt.Sprintf(
			"%d streaming publishes are being read already, the most this route reads at once (max_streams); try again later", limit)}
	}
	if !ps.open.add(st) {
		ps.streams.Add(-1)
		return errStopping
	}
	return nil
}

// reading registers a plain publish that reads its body; one that comes
// while the config stops is stopped at once (it has endWait).
func (ps *publishStreams) reading(br stoppable) {
	if !ps.open.add(br) {
		br.stop()
	}
}

// remove unregisters p before its handler returns: it is not stopped
// after.
func (ps *publishStreams) remove(p stoppable) {
	if !ps.open.remove(p) {
		return
	}
	if _, ok := p.(*ingest); ok {
		ps.streams.Add(-1)
	}
}

// stop ends every publish in progress and refuses new streams; it
// returns how many streams it ended. Their events before are published;
// they are answered 503, as plain publishes whose body does not come
// within endWait.
func (ps *publishStreams) stop() int {
	n := 0
	for _, p := range ps.open.close() {
		p.stop()
		if _, ok := p.(*ingest); ok {
			n++
		}
	}
	return n
}
