//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

// subPool is a set of subscriber connections and what they received.
type subPool struct {
	targets     []*subTarget   // taken by the subscribers in turn
	sources     []*net.TCPAddr // local addresses to dial from, in turn
	bufSize     int
	dialTimeout time.Duration
	pollers     []*poller         // when set, they read the streams
	quic        []*quic.Transport // h3: the UDP sockets of the QUIC connections
	quicConf    *quic.Config

	subs    []*subscriber
	wg      sync.WaitGroup // the subscribers' goroutines
	closing atomic.Bool    // the tool is closing the connections

	run atomic.Pointer[fanRun] // the run whose events are being counted

	connected  atomic.Int64
	failed     atomic.Int64
	retries    atomic.Int64  // connections refused and tried again
	dropped    atomic.Int64  // streams the server or network ended
	events     atomic.Uint64 // events with data, of any kind
	foreign    atomic.Uint64 // events whose data the tool did not publish
	stale      atomic.Uint64 // events of an earlier run
	heartbeats atomic.Uint64 // comment lines
	reads      atomic.Uint64 // reads that returned stream bytes
	bytes      atomic.Uint64 // stream bytes those reads returned

	failMu   sync.Mutex
	failures map[string]int
}

// subscriber is one connection reading an event stream.
type subscriber struct {
	pool    *subPool
	id      int
	topic   int
	conn    net.Conn   // until a poller takes the socket over
	qconn   *quic.Conn // h3: the QUIC connection
	fd      int        // the socket, once a poller has it
	reader  io.Reader  // what read reads: the connection, or the h3 body
	h2      *h2Stream  // h2: what readH2 reads
	buf     []byte     // the goroutine's read buffer, without a poller
	p       *streamParser
	now     time.Duration // when the bytes being parsed were read, since epoch
	arrival time.Duration // when the kernel received them, or now

	mu    sync.Mutex // guards conn and qconn, and what the runs read
	open  bool       // the stream had its headers
	inRun bool       // open when the current run started
	rec   receipts
	last  time.Duration // the latest first receipt of the run, since epoch
	ended bool          // the stream ended before the tool closed it
}

// newSubPool prepares n subscribers; sources is the number of loopback
// addresses (127.0.0.1, 127.0.0.2, ...) to spread them over, 0 for the
// kernel's choice.
func newSubPool(targets []*subTarget, sources, bufSize int, dialTimeout time.Duration) *subPool {
	p := &subPool{targets: targets, bufSize: bufSize, dialTimeout: dialTimeout, failures: make(map[string]int)}
	for i := range sources {
		p.sources = append(p.sources, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))})
	}
	return p
}

// connect opens n streams, topic i mod k for the i-th, at most
// concurrency at a time, and returns once each has its response headers
// or has failed. The streams are then read until close.
func (p *subPool) connect(ctx context.Context, n, k, concurrency int, progress *progress) {
	sem := make(chan struct{}, max(concurrency, 1))
	var ready sync.WaitGroup
	p.subs = make([]*subscriber, n)
	stop := progress.every(func() string {
		return fmt.Sprintf("connecting: %d/%d connected, %d failed", p.connected.Load(), n, p.failed.Load())
	})
	defer stop()
	for i := range n {
		s := &subscriber{pool: p, id: i, topic: i % k, fd: -1}
		p.subs[i] = s
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			p.fail(ctx.Err())
			continue
		}
		ready.Add(1)
		p.wg.Add(1)
		go s.serve(ctx, sem, &ready)
	}
	ready.Wait()
}

// serve connects, reports that it is ready, and reads the stream until
// it ends.
func (s *subscriber) serve(ctx context.Context, sem chan struct{}, ready *sync.WaitGroup) {
	defer s.pool.wg.Done()
	err := s.dial(ctx)
	pl := s.pool.pollerFor(s)
	if err == nil && pl != nil {
		err = pl.adopt(s)
		s.buf = nil
	}
	<-sem
	if err != nil {
		s.closeConn()
		s.pool.fail(err)
		ready.Done()
		return
	}
	s.mu.Lock()
	s.open = true
	s.mu.Unlock()
	s.pool.connected.Add(1)
	ready.Done()
	switch {
	case pl != nil:
	case s.h2 != nil:
		s.readH2()
	default:
		s.read()
	}
}

// closeConn closes the connection, unless a poller took it over.
func (s *subscriber) closeConn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	if s.qconn != nil {
		_ = s.qconn.CloseWithError(0, "")
		s.qconn = nil
	}
}

// target is where the subscriber subscribes: the pool's targets in turn.
func (s *subscriber) target() *subTarget { return s.pool.targets[s.id%len(s.pool.targets)] }

// dial connects and reads the response headers, in the subscriber's
// protocol.
func (s *subscriber) dial(ctx context.Context) error {
	switch s.target().proto {
	case protoH1TLS:
		return s.dialH1TLS(ctx)
	case protoH2:
		return s.dialH2(ctx)
	case protoH3:
		return s.dialH3Retrying(ctx)
	}
	return s.dialH1(ctx)
}

// maxRefused is how many times a subscriber whose QUIC connection the
// server refused tries again.
const maxRefused = 20

// dialH3Retrying is dialH3, tried again when the server refuses the
// connection: quic-go's server refuses new connections while 32 are
// waiting to be accepted, as happens when many connect at once to a busy
// server. (A browser would fall back to HTTP/2 and try HTTP/3 later.)
func (s *subscriber) dialH3Retrying(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := s.dialH3(ctx)
		var te *quic.TransportError
		if err == nil || attempt > maxRefused || !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
			return err
		}
		s.pool.retries.Add(1)
		if !sleep(ctx, time.Duration(attempt)*20*time.Millisecond) {
			return err
		}
	}
}

// errStreamEnded is the end of a stream's body.
var errStreamEnded = errors.New("the stream ended")

// read parses the stream, read from the connection (plain or TLS) or the
// HTTP/3 body, until it ends or the tool closes it. The arrival time is
// the read's: no kernel timestamp comes through TLS or QUIC. (Over plain
// TCP, after each read that returned data comes one that fails with
// EAGAIN before the goroutine waits.)
func (s *subscriber) read() {
	for {
		n, err := s.reader.Read(s.buf)
		if n > 0 {
			s.pool.reads.Add(1)
			s.pool.bytes.Add(uint64(n))
			s.now = since()
			s.arrival = s.now
			if perr := s.p.feed(s.buf[:n]); perr != nil && err == nil {
				err = perr
			}
		}
		if err == nil && s.p.done() {
			err = errStreamEnded
		}
		if err != nil {
			s.closeConn()
			s.end()
			return
		}
	}
}

// readH2 parses the HTTP/2 stream's data, frame by frame, until the
// stream ends or the tool closes it; the arrival time is the frame's
// read. Each DATA frame counts as a read.
func (s *subscriber) readH2() {
	for {
		data, err := s.h2.next()
		if len(data) > 0 {
			s.pool.reads.Add(1)
			s.pool.bytes.Add(uint64(len(data)))
			s.now = since()
			s.arrival = s.now
			if perr := s.p.feed(data); perr != nil && err == nil {
				err = perr
			}
		}
		if err != nil {
			s.closeConn()
			s.end()
			return
		}
	}
}

// end records a stream that ended, unless the tool closed it.
func (s *subscriber) end() {
	p := s.pool
	if p.closing.Load() {
		return
	}
	p.dropped.Add(1)
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
}

// onEvent counts one event and, when it belongs to the current run,
// records its receipt and latency.
func (s *subscriber) onEvent(_, data []byte) {
	p := s.pool
	p.events.Add(1)
	run, seq, sent, ok := parsePayload(data)
	if !ok {
		p.foreign.Add(1)
		return
	}
	r := p.run.Load()
	if r == nil || r.id != run {
		p.stale.Add(1)
		return
	}
	k := uint64(r.topics)
	s.mu.Lock()
	first := false
	if seq%k != uint64(s.topic) {
		s.rec.unexpected++
	} else {
		first = s.rec.add(seq / k)
	}
	if first {
		s.last = s.now
	}
	s.mu.Unlock()
	if first {
		r.distinct.Add(1)
		r.latency.record(s.arrival - time.Duration(sent))
		r.readLatency.record(s.now - time.Duration(sent))
	}
}

// fail counts a subscriber that could not connect.
func (p *subPool) fail(err error) {
	p.failed.Add(1)
	kind := errorKind(err)
	p.failMu.Lock()
	p.failures[kind]++
	p.failMu.Unlock()
}

// failureCounts returns the connection failures by kind.
func (p *subPool) failureCounts() map[string]int {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	m := make(map[string]int, len(p.failures))
	for k, v := range p.failures {
		m[k] = v
	}
	return m
}

// pollerFor returns the poller that reads s, if any.
func (p *subPool) pollerFor(s *subscriber) *poller {
	if len(p.pollers) == 0 {
		return nil
	}
	return p.pollers[s.id%len(p.pollers)]
}

// close closes every connection, waits for their readers, and adds up
// the heartbeats.
func (p *subPool) close() {
	p.closing.Store(true)
	for _, pl := range p.pollers {
		pl.close()
	}
	for _, s := range p.subs {
		if s != nil {
			s.closeConn()
		}
	}
	p.wg.Wait()
	closeQUICTransports(p.quic)
	for _, s := range p.subs {
		if s != nil && s.p != nil {
			p.heartbeats.Add(s.p.comments)
		}
	}
}

// alive returns the subscribers whose stream is open, by topic.
func (p *subPool) alive(k int) []int {
	n := make([]int, k)
	for _, s := range p.subs {
		s.mu.Lock()
		if s.open && !s.ended {
			n[s.topic]++
		}
		s.mu.Unlock()
	}
	return n
}

// errorKind names an error for the failure counts.
func errorKind(err error) string {
	var se *statusError
	switch {
	case errors.As(err, &se):
		return "status " + strconv.Itoa(se.status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no free local port (use more --sources)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files (ulimit -n)"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}

// statusError is a response other than 200.
type statusError struct {
	status int
	line   string
}

func (e *statusError) Error() string { return "the server answered " + e.line }

// readHead reads the status line and headers of a response into buf and
// returns the body bytes read with them and whether the body is chunked.
// A response other than 200, or a content type other than
// text/event-stream, is an error.
func readHead(conn net.Conn, buf []byte) (body []byte, chunked bool, err error) {
	n := 0
	for {
		if n == len(buf) {
			return nil, false, fmt.Errorf("response headers larger than the %d-byte buffer (--buf)", len(buf))
		}
		m, err := conn.Read(buf[n:])
		n += m
		if end := headEnd(buf[:n]); end >= 0 {
			chunked, err := parseHead(buf[:end])
			return buf[end:n], chunked, err
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading the response headers: %w", err)
		}
	}
}

// headEnd returns the index just after the blank line that ends the
// headers, or -1.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return -1
}

// parseHead checks the status line and headers of a stream's response.
func parseHead(head []byte) (chunked bool, err error) {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	status := strings.TrimRight(lines[0], "\r")
	f := strings.Fields(status)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return false, fmt.Errorf("not an HTTP/1.x response: %q", status)
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return false, fmt.Errorf("malformed status line %q", status)
	}
	if code != 200 {
		return false, &statusError{status: code, line: status}
	}
	contentType := ""
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(value), "chunked")
		case "content-type":
			contentType = value
		}
	}
	if !strings.HasPrefix(strings.ToLower(contentType), "text/event-stream") {
		return false, fmt.Errorf("content type %q is not text/event-stream", contentType)
	}
	return chunked, nil
}

// topicName is the name of the i-th topic.
func topicName(i int) string { return "t" + strconv.Itoa(i) }
