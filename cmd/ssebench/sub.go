//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// subTarget is where and how subscribers connect.
type subTarget struct {
	addr    *net.TCPAddr // the server
	host    string       // the Host header
	request *template    // the request target, path and query, with {topic}
	headers string       // extra header lines, each ending in CRLF
}

// newSubTarget parses a subscribe URL template (http only: streams are
// read over plain HTTP/1.1). The path and query are kept as written.
func newSubTarget(rawURL string, headers []string) (*subTarget, error) {
	host, reqTarget, ok := splitURL(rawURL)
	if !ok {
		return nil, fmt.Errorf("--sub-url %q: only http:// URLs are supported", rawURL)
	}
	addr, err := net.ResolveTCPAddr("tcp4", dialAddr(host))
	if err != nil {
		return nil, fmt.Errorf("resolving the --sub-url host: %w", err)
	}
	var hb strings.Builder
	for _, h := range headers {
		if !strings.Contains(h, ":") || strings.ContainsAny(h, "\r\n") {
			return nil, fmt.Errorf("--sub-header %q is not of the form 'Name: value'", h)
		}
		hb.WriteString(h)
		hb.WriteString("\r\n")
	}
	return &subTarget{addr: addr, host: host, request: parseTemplate(reqTarget), headers: hb.String()}, nil
}

// requestFor returns the GET request of a subscriber to topic.
func (t *subTarget) requestFor(topic string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, "GET "...)
	b = t.request.expand(b, escapeQuery, topic, nil, 0)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.host...)
	b = append(b, "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: ssebench\r\n"...)
	b = append(b, t.headers...)
	return append(b, "\r\n"...)
}

// subPool is a set of subscriber connections and what they received.
type subPool struct {
	targets     []*subTarget   // subscriber i connects to targets[i%len]
	sources     []*net.TCPAddr // local addresses to dial from, in turn
	bufSize     int
	dialTimeout time.Duration
	pollers     []*poller // when set, they read the streams

	subs    []*subscriber
	wg      sync.WaitGroup // the subscribers' goroutines
	closing atomic.Bool    // the tool is closing the connections

	run atomic.Pointer[fanRun] // the run whose events are being counted

	connected  atomic.Int64
	failed     atomic.Int64
	dropped    atomic.Int64  // streams the server or network ended
	events     atomic.Uint64 // events with data, of any kind
	foreign    atomic.Uint64 // events whose data the tool did not publish
	stale      atomic.Uint64 // events of an earlier run
	heartbeats atomic.Uint64 // comment lines
	reads      atomic.Uint64 // reads that returned stream bytes

	failMu   sync.Mutex
	failures map[string]int
}

// subscriber is one connection reading an event stream.
type subscriber struct {
	pool    *subPool
	id      int
	topic   int
	conn    net.Conn // until a poller takes the socket over
	fd      int      // the socket, once a poller has it
	buf     []byte   // the goroutine's read buffer, without a poller
	p       *streamParser
	now     time.Duration // when the bytes being parsed were read, since epoch
	arrival time.Duration // when the kernel received them, or now

	mu    sync.Mutex // guards conn, and what the runs read
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
	if pl == nil {
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
}

// dial connects and reads the response headers.
func (s *subscriber) dial(ctx context.Context) error {
	p := s.pool
	d := net.Dialer{Timeout: p.dialTimeout, KeepAlive: -1}
	if len(p.sources) > 0 {
		d.LocalAddr = p.sources[s.id%len(p.sources)]
	}
	target := p.targets[s.id%len(p.targets)]
	conn, err := d.DialContext(ctx, "tcp4", target.addr.String())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	s.buf = make([]byte, p.bufSize)
	_ = conn.SetDeadline(time.Now().Add(p.dialTimeout))
	if _, err := conn.Write(target.requestFor(topicName(s.topic))); err != nil {
		conn.Close()
		return fmt.Errorf("sending the request: %w", err)
	}
	body, chunked, err := readHead(conn, s.buf)
	if err != nil {
		conn.Close()
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	s.p = newStreamParser(chunked, s.onEvent)
	if len(body) > 0 {
		s.now = since()
		s.arrival = s.now
		if err := s.p.feed(body); err != nil {
			conn.Close()
			return fmt.Errorf("reading the stream: %w", err)
		}
	}
	return nil
}

// errStreamEnded is the end of a stream's body.
var errStreamEnded = errors.New("the stream ended")

// read parses the stream with net.Conn.Read until it ends or the tool
// closes it: after each read that returned data comes one that fails
// with EAGAIN before the goroutine waits.
func (s *subscriber) read() {
	for {
		n, err := s.conn.Read(s.buf)
		if n > 0 {
			s.pool.reads.Add(1)
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
			s.conn.Close()
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
		if s == nil {
			continue
		}
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		if c != nil {
			c.Close()
		}
	}
	p.wg.Wait()
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
