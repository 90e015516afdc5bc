package caddysse

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/ssehub/caddy-sse/transport"
)

// batchSize is how many bytes of queued events are gathered into one
// write of the response; the stream is flushed once per batch.
const batchSize = 32 << 10

// batchPool holds the buffers that gather several events into one write,
// so that idle streams hold none.
var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchSize)
	return &b
}}

// partsPool holds the lists of byte slices a stream sends at once.
var partsPool = sync.Pool{New: func() any {
	p := make([][]byte, 0, 16)
	return &p
}}

// heartbeat is the comment written to a silent stream.
var heartbeat = transport.AppendComment(nil, "")

// An output is where a stream's bytes go: the response, or the connection
// once the stream has taken it over.
type output interface {
	// send writes parts, in order, as one piece of the stream, and flushes.
	send(parts [][]byte) error
}

// responseOutput writes through the http.ResponseWriter (and Caddy's
// wrappers of it), flushing with a ResponseController.
type responseOutput struct {
	w  http.ResponseWriter
	rc http.ResponseController
}

func newResponseOutput(w http.ResponseWriter) *responseOutput {
	return &responseOutput{w: w, rc: *http.NewResponseController(w)}
}

// send writes a lone part as it is and gathers several into large writes.
func (o *responseOutput) send(parts [][]byte) error {
	if len(parts) == 1 {
		if _, err := o.w.Write(parts[0]); err != nil {
			return err
		}
		return o.rc.Flush()
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b := (*bp)[:0]
	for _, p := range parts {
		if len(b) > 0 && len(b)+len(p) > batchSize {
			if _, err := o.w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		if len(b) == 0 && len(p) > batchSize {
			if _, err := o.w.Write(p); err != nil {
				return err
			}
			continue
		}
		b = append(b, p...)
	}
	*bp = b[:0]
	if len(b) > 0 {
		if _, err := o.w.Write(b); err != nil {
			return err
		}
	}
	return o.rc.Flush()
}

// stream writes one subscriber's events to its output.
type stream struct {
	out    output
	sub    *subscriber
	head   uint64    // live events up to this Seq were covered by the replay
	single [1][]byte // the parts of a one-piece send, without allocating
}

// The header values of every stream, shared as Caddy shares its Server
// header: a handler that changes a header replaces its slice.
var (
	streamContentType  = []string{"text/event-stream"}
	streamCacheControl = []string{"no-cache, no-transform"}
	streamAccelBuffer  = []string{"no"}
)

// setStreamHeaders sets the headers of an event stream. no-transform keeps
// Caddy's encode handler (and proxies) from compressing the stream, and
// X-Accel-Buffering keeps nginx from holding it back.
func setStreamHeaders(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = streamContentType
	h["Cache-Control"] = streamCacheControl
	h["X-Accel-Buffering"] = streamAccelBuffer
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
	return st.sendParts(parts)
}

// resetData is the payload of the reset event.
type resetData struct {
	LastEventID string `json:"last_event_id"`
}

// pump sends everything queued, or a heartbeat if one is due and there is
// nothing else, in one send. It returns the number of events sent.
func (st *stream) pump() (int, error) {
	q := st.sub.take()
	defer st.sub.recycle(q)
	for len(q) > 0 && q[0].Seq <= st.head {
		q = q[1:] // covered by the replay
	}
	if len(q) == 0 {
		if !st.sub.beat.Swap(false) {
			return 0, nil
		}
		return 0, st.send(heartbeat)
	}
	st.sub.beat.Store(false)
	if len(q) == 1 {
		return 1, st.send(q[0].Wire)
	}
	pp := partsPool.Get().(*[][]byte)
	parts := (*pp)[:0]
	for _, ev := range q {
		parts = append(parts, ev.Wire)
	}
	err := st.sendParts(parts)
	clear(parts)
	*pp = parts[:0]
	partsPool.Put(pp)
	return len(q), err
}

// send sends one piece of the stream.
func (st *stream) send(p []byte) error {
	st.single[0] = p
	err := st.sendParts(st.single[:])
	st.single[0] = nil
	return err
}

// sendParts sends parts as one piece of the stream and notes that the
// stream is not silent (see Handler.checkStream).
func (st *stream) sendParts(parts [][]byte) error {
	st.sub.wrote.Store(true)
	return st.out.send(parts)
}

// finish writes a final retry hint before the stream ends.
func (st *stream) finish(retryMS int64) error {
	return st.send(transport.AppendRetry(nil, retryMS))
}
