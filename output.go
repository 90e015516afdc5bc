package caddysse

import (
	"net/http"
	"sync"
	"time"
)

// batchSize is the most bytes a stream writes in one piece: queued events
// are gathered into pieces of this size, and a larger event is cut into
// pieces, so that a stream that makes no progress for write_timeout can be
// told from one that is slowly making some.
const batchSize = 32 << 10

// batchPool holds the buffers that gather several events into one write,
// so that idle streams hold none.
var batchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, batchSize)
	return &b
}}

// An output is where a stream's bytes go: the response, or the connection
// once the stream has taken it over. Only the stream's writer calls write
// and flush; any goroutine may call interrupt, at any time.
type output interface {
	// write writes parts, in order, as one piece of the stream: at most
	// batchSize bytes in all.
	write(parts [][]byte) error
	// flush sends what was written to the client.
	flush() error
	// interrupt makes the pending write, and those that follow, fail
	// within d; at once for 0.
	interrupt(d time.Duration)
}

// responseOutput writes through the http.ResponseWriter (and Caddy's
// wrappers of it), flushing with a ResponseController; once the stream's
// start has gone out, it writes to net/http's own writer (see direct).
//
// Other goroutines interrupt it through net/http's own response writer,
// under Caddy's wrappers: setting a write deadline on it is safe from any
// goroutine while the handler runs (a connection deadline for HTTP/1.x, a
// stream deadline for HTTP/2 and HTTP/3), whereas Caddy's wrappers keep
// state of their own. During the start, Caddy's write idle timeout moves
// the deadline again before each write, and net/http may still be closing
// a TLS connection after a failed write, so a stream that has ended is
// interrupted again until it is gone (see Subscribe.checkStream and streamSet.wait).
type responseOutput struct {
	w  http.ResponseWriter
	rc http.ResponseController

	mu       sync.Mutex
	inner    *http.ResponseController // net/http's own writer
	released bool                     // the handler has returned, or the connection was taken over
	recut    *time.Timer              // cuts the writes again until released
}

// recutEvery is how often an interrupted response's writes are cut again
// until its handler returns: a write that failed makes net/http close the
// connection, and closing a TLS connection first sends a close_notify
// alert under a deadline of its own (5 s), to a client that may read
// nothing.
const recutEvery = 100 * time.Millisecond

func newResponseOutput(w http.ResponseWriter) *responseOutput {
	return &responseOutput{
		w:     w,
		rc:    *http.NewResponseController(w),
		inner: http.NewResponseController(innermost(w)),
	}
}

// direct makes the output write to net/http's own writer from now on,
// under Caddy's wrappers, once the stream's start has gone out through
// them: a write then costs what it costs net/http alone (over HTTP/2,
// Caddy's idle timeout writer moved the stream's deadline before every
// write, through the connection's serve goroutine). A response that a
// wrapper encodes (Content-Encoding set, e.g. by encode when a deferred
// header removed no-transform) keeps its wrappers.
//
// Caddy's idle timeout writer leaves the deadline of its last write armed
// (over HTTP/1.x and HTTP/3), which no later write would move again: it
// is put back to hard, the deadline of the server's write timeout (zero
// for none), unless the output was interrupted meanwhile.
func (o *responseOutput) direct(hard time.Time) {
	if responseEncoding(o.w) != "" {
		return
	}
	in := innermost(o.w)
	o.mu.Lock()
	if !o.released && o.recut == nil {
		_ = o.inner.SetWriteDeadline(hard)
	}
	o.mu.Unlock()
	o.w = in
	o.rc = *http.NewResponseController(in)
}

// responseEncoding is the Content-Encoding that a wrapper gave the
// response (encode, when a deferred header removed no-transform), or "":
// an encoded response must keep going through its encoder.
func responseEncoding(w http.ResponseWriter) string {
	return innermost(w).Header().Get("Content-Encoding")
}

// innermost returns the response writer under every wrapper of w.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// write implements output. A lone part is written as it is; several are
// gathered into one write.
func (o *responseOutput) write(parts [][]byte) error {
	if len(parts) == 1 {
		_, err := o.w.Write(parts[0])
		return err
	}
	bp := batchPool.Get().(*[]byte)
	b := (*bp)[:0]
	for _, p := range parts {
		b = append(b, p...)
	}
	_, err := o.w.Write(b)
	*bp = b[:0]
	batchPool.Put(bp)
	return err
}

// flush implements output.
func (o *responseOutput) flush() error { return o.rc.Flush() }

// interrupt implements output.
func (o *responseOutput) interrupt(d time.Duration) {
	deadline := time.Unix(1, 0) // in the past: fail at once
	if d > 0 {
		deadline = time.Now().Add(d)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.released {
		return
	}
	_ = o.inner.SetWriteDeadline(deadline)
	if o.recut == nil {
		o.recut = time.AfterFunc(d+recutEvery, o.cut)
	}
}

// cut makes the pending write fail at once, and again a little later,
// until the handler returns.
func (o *responseOutput) cut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.released {
		return
	}
	_ = o.inner.SetWriteDeadline(time.Unix(1, 0))
	o.recut.Reset(recutEvery)
}

// release makes later interrupts do nothing: the response writer must not
// be used once the handler has returned or the connection was taken over.
func (o *responseOutput) release() {
	o.mu.Lock()
	o.released = true
	if o.recut != nil {
		o.recut.Stop()
	}
	o.mu.Unlock()
}

// keep undoes release for a response that stays net/http's (a take-over
// that failed): interrupts cut its writes again.
func (o *responseOutput) keep() {
	o.mu.Lock()
	o.released = false
	if o.recut != nil {
		o.recut.Reset(recutEvery)
	}
	o.mu.Unlock()
}

// Interface guards
var _ output = (*responseOutput)(nil)
