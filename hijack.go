package caddysse

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// chunkEnd ends a chunk, and lastChunk ends a chunked body.
var (
	chunkEnd  = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")
)

// connOutput writes a stream straight to the connection it has taken over
// from net/http: each piece is one writev of the chunk header, the events'
// shared bytes and the chunk's end, so that nothing is copied, and
// net/http's buffers and goroutines are freed for the stream's whole life.
// A write that stalls is cut by the handler's sweeper (write_timeout).
type connOutput struct {
	conn    net.Conn
	raw     syscall.Conn // the TCP connection under TLS, for probing
	chunked bool         // HTTP/1.1: the body is chunked; HTTP/1.0: it ends with the connection
	vector  bool         // the connection writes net.Buffers with one writev

	mu      sync.Mutex // serialises the writer and end
	closed  bool
	hdr     [18]byte
	buffers net.Buffers
}

// takeOver hijacks the connection of an HTTP/1.x stream whose start has
// been written and flushed, and releases out: net/http then forgets the
// connection. A response that a wrapper encodes (Content-Encoding set,
// e.g. by encode) is not taken over: its encoder must see every write.
// When it fails, the response and out stay as they were.
func takeOver(w http.ResponseWriter, r *http.Request, out *responseOutput) (*connOutput, error) {
	if ce := responseEncoding(w); ce != "" {
		return nil, fmt.Errorf("the response is encoded (Content-Encoding: %s)", ce)
	}
	out.release() // no interrupt through net/http's writer while it lets go
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		out.keep()
		return nil, err
	}
	o := &connOutput{conn: conn, chunked: r.ProtoAtLeast(1, 1)}
	switch c := conn.(type) {
	case *net.TCPConn:
		o.raw, o.vector = c, true
	case *tls.Conn:
		o.raw, _ = c.NetConn().(syscall.Conn)
	default:
		o.raw, _ = conn.(syscall.Conn)
	}
	return o, nil
}

// write implements output: the piece is one chunk of the body.
func (o *connOutput) write(parts [][]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return net.ErrClosed
	}
	o.buffers = o.buffers[:0]
	if o.chunked {
		hdr := strconv.AppendUint(o.hdr[:0], uint64(n), 16)
		o.buffers = append(o.buffers, append(hdr, '\r', '\n'))
	}
	o.buffers = append(o.buffers, parts...)
	if o.chunked {
		o.buffers = append(o.buffers, chunkEnd)
	}
	err := o.writeBuffers()
	clear(o.buffers[:cap(o.buffers)])
	return err
}

// flush implements output: every piece is written at once.
func (*connOutput) flush() error { return nil }

// writeBuffers writes o.buffers: with one writev on a TCP connection, else
// (TLS) gathered into one write, so that it makes one TLS record.
func (o *connOutput) writeBuffers() error {
	if o.vector {
		bufs := o.buffers // WriteTo consumes its receiver
		_, err := bufs.WriteTo(o.conn)
		return err
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b := (*bp)[:0]
	for _, p := range o.buffers {
		b = append(b, p...)
	}
	*bp = b[:0]
	_, err := o.conn.Write(b)
	return err
}

// end ends the body (the last chunk, unless the stream was cut short) and
// closes the connection.
func (o *connOutput) end(clean bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	if clean && o.chunked {
		_ = o.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = o.conn.Write(lastChunk)
	}
	o.closed = true
	_ = o.conn.Close()
}

// interrupt implements output: for 0, it closes the connection, so that a
// writer blocked on a client that does not read returns at once; else it
// sets a write deadline.
func (o *connOutput) interrupt(d time.Duration) {
	if d <= 0 {
		_ = o.conn.Close()
		return
	}
	_ = o.conn.SetWriteDeadline(time.Now().Add(d))
}

// Interface guards
var _ output = (*connOutput)(nil)
