package caddysse

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/ssehub/caddy-sse/transport"
)

// batchSize is how many bytes of queued events are gathered into one
// write; the stream is flushed once per batch of queued events.
const batchSize = 32 << 10

// batchPool holds the buffers that gather several queued events into one
// write, so that idle streams hold none.
var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchSize)
	return &b
}}

// heartbeat is the comment written to a silent stream.
var heartbeat = transport.AppendComment(nil, "")

// stream writes one subscriber's events to its response.
type stream struct {
	w    http.ResponseWriter
	rc   http.ResponseController
	sub  *subscriber
	head uint64 // live events up to this Seq were covered by the replay
}

func newStream(w http.ResponseWriter, sub *subscriber) *stream {
	return &stream{w: w, rc: *http.NewResponseController(w), sub: sub}
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
// resumption is incomplete, the replayed events, and flushes. When nothing
// is replayed, an id-only block sets the client's last event id to the
// hub's head, so that a client that reconnects before its first event
// still resumes from where it connected.
func (st *stream) start(retryMS int64, rep transport.Replay, lastID, resetEvent string) error {
	setStreamHeaders(st.w)
	st.w.WriteHeader(http.StatusOK)
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
	b, err := st.writeEvents(b, rep.Events)
	*bp = b[:0]
	if err != nil {
		return err
	}
	return st.flush()
}

// resetData is the payload of the reset event.
type resetData struct {
	LastEventID string `json:"last_event_id"`
}

// pump writes everything queued, or a heartbeat if one is due and there
// is nothing else, and flushes once. It returns the number of events
// written.
func (st *stream) pump() (int, error) {
	q := st.sub.take()
	defer st.sub.recycle(q)
	n, err := st.writeQueued(q)
	if err != nil {
		return n, err
	}
	if n == 0 {
		if !st.sub.beat.Swap(false) {
			return 0, nil
		}
		if _, err := st.w.Write(heartbeat); err != nil {
			return 0, err
		}
	} else {
		st.sub.beat.Store(false)
	}
	return n, st.flush()
}

// writeQueued writes queued events, skipping those the replay covered:
// one event goes out as is, several are gathered into large writes.
func (st *stream) writeQueued(q []*transport.Event) (int, error) {
	for len(q) > 0 && q[0].Seq <= st.head {
		q = q[1:]
	}
	switch len(q) {
	case 0:
		return 0, nil
	case 1:
		_, err := st.w.Write(q[0].Wire)
		return 1, err
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b, err := st.writeEvents((*bp)[:0], q)
	*bp = b[:0]
	return len(q), err
}

// writeEvents appends events to b and writes b whenever it is full, and
// at the end. It returns b for reuse.
func (st *stream) writeEvents(b []byte, events []*transport.Event) ([]byte, error) {
	for _, ev := range events {
		if len(b) > 0 && len(b)+len(ev.Wire) > batchSize {
			if _, err := st.w.Write(b); err != nil {
				return b, err
			}
			b = b[:0]
		}
		if len(b) == 0 && len(ev.Wire) > batchSize {
			if _, err := st.w.Write(ev.Wire); err != nil {
				return b, err
			}
			continue
		}
		b = append(b, ev.Wire...)
	}
	if len(b) > 0 {
		if _, err := st.w.Write(b); err != nil {
			return b, err
		}
	}
	return b, nil
}

// finish writes a final retry hint before the stream ends.
func (st *stream) finish(retryMS int64) error {
	if _, err := st.w.Write(transport.AppendRetry(nil, retryMS)); err != nil {
		return err
	}
	return st.flush()
}

func (st *stream) flush() error {
	st.sub.wrote.Store(true)
	return st.rc.Flush()
}
