package caddysse

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/memory"
)

// The hub harness runs the delivery rules without Caddy and without
// sockets: a Hub on the memory transport, an sse route set up as
// Provision sets it up (the sweeper included), and clients whose
// requests go straight to the route's ServeHTTP and whose responses come
// back through an in-memory pipe (testPipe) with a bounded buffer and
// write deadlines, in place of a socket: a client that reads nothing
// stalls the stream's writes once the buffer is full, and the stream's
// output cuts them with a deadline, as it cuts a connection's. Each
// harness is a hub of its own, so the tests run in parallel.
type harness struct {
	t     *testing.T
	hub   *Hub
	route *Subscribe
}

// newHarness opens a hub whose history keeps limits (zero Events: 1000,
// zero MaxBytes: 64 MiB) and an sse route on it with the settings of
// route (a new Subscribe, its defaults where unset); both are closed when
// the test ends.
func newHarness(t *testing.T, limits transport.Limits, route *Subscribe) *harness {
	t.Helper()
	if limits.Events == 0 {
		limits.Events = 1000
	}
	if limits.MaxBytes == 0 {
		limits.MaxBytes = 64 << 20
	}
	hub, err := newHub("harness", new(memory.Transport), limits, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Destruct() })
	return &harness{t: t, hub: hub, route: harnessRoute(t, hub, route)}
}

// harnessRoute sets up an sse route on hub as Provision does, short of
// Caddy (no config to stop: the test's cleanup ends its streams).
func harnessRoute(t *testing.T, hub *Hub, h *Subscribe) *Subscribe {
	t.Helper()
	h.logger = zap.NewNop()
	h.setDefaults()
	if err := h.validate(); err != nil {
		t.Fatal(err)
	}
	h.hub = hub
	h.unwindow = hub.backlog.use(window{bytes: h.BufferSize, events: h.Buffer})
	h.cors = newCORSPolicy(h.CORSOrigins, http.MethodGet)
	g, err := newGuard(h.Allow, h.Token, false)
	if err != nil {
		t.Fatal(err)
	}
	h.guard = g
	h.per = newStreamsPer(h.MaxStreamsPer)
	h.stop = make(chan struct{})
	go h.sweep(h.tick())
	t.Cleanup(func() { _ = h.Cleanup() })
	return h
}

// client returns a client of the harness's route whose responses are
// read through a pipe buffering up to buffer bytes.
func (hs *harness) client(buffer int) *http.Client {
	return routeClient(hs.route, buffer)
}

// routeClient returns a client of route whose responses are read through
// a pipe buffering up to buffer bytes.
func routeClient(route *Subscribe, buffer int) *http.Client {
	return &http.Client{Transport: &pipeTransport{route: route, buffer: buffer}}
}

// pastStall tells, after a publish has returned, whether it returned
// while the stream of sub, the first request of client, was stalled on
// its client and not yet ended: the publish did not wait for it.
func pastStall(client *http.Client, sub *subscriber) bool {
	return client.Transport.(*pipeTransport).pipe(0).stalled() && sub.endReason() == endNone
}

// only returns the subscriber of topic, which must have one alone.
func (hs *harness) only(topic string) *subscriber {
	hs.t.Helper()
	hs.hub.mu.RLock()
	defer hs.hub.mu.RUnlock()
	ts := hs.hub.topics[topic]
	if ts == nil || len(ts.subs) != 1 {
		hs.t.Fatalf("topic %q has not one subscriber", topic)
	}
	return ts.subs[0]
}

// open subscribes to the route (a path with its query, e.g.
// "/events?topic=a") with a client that buffers 64 KiB, and checks that
// the stream started; it is closed when the test ends.
func (hs *harness) open(path string, header http.Header) *ssetest.Stream {
	hs.t.Helper()
	return hs.openWith(hs.client(64<<10), path, header)
}

// openWith subscribes with client.
func (hs *harness) openWith(client *http.Client, path string, header http.Header) *ssetest.Stream {
	hs.t.Helper()
	return ssetest.OpenT(hs.t, client, "http://harness"+path, header)
}

// publish publishes one event with data to topics and returns its receipt.
func (hs *harness) publish(data string, topics ...string) transport.Receipt {
	hs.t.Helper()
	return hs.publishAll(transport.Message{Topics: topics, Data: data, Retry: -1})[0]
}

// publishAll publishes messages in one request.
func (hs *harness) publishAll(msgs ...transport.Message) []transport.Receipt {
	hs.t.Helper()
	rs, err := hs.hub.Publish(context.Background(), transport.PublishRequest{Messages: msgs})
	if err != nil {
		hs.t.Fatal(err)
	}
	return rs
}

// subscribers waits until the hub has n subscribers.
func (hs *harness) subscribers(n int) {
	hs.t.Helper()
	streamCount(hs.t, hs.hub, n)
}

// disconnects returns the hub's count of streams ended for reason.
func (hs *harness) disconnects(reason endReason) uint64 {
	return hs.hub.counters.disconnects[reason].Load()
}

// pipeTransport is an http.RoundTripper that serves each request with an
// sse route, in a goroutine of its own as net/http would, and returns its
// response once the route has written its header.
type pipeTransport struct {
	route  *Subscribe
	buffer int

	mu    sync.Mutex
	pipes []*testPipe // of the requests, in order
}

// pipe returns the pipe of the transport's i-th request.
func (pt *pipeTransport) pipe(i int) *testPipe {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.pipes[i]
}

func (pt *pipeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	r := httptest.NewRequestWithContext(ctx, req.Method, req.URL.RequestURI(), nil)
	r.Header = req.Header.Clone()
	r.RemoteAddr = "192.0.2.1:1234"
	p := newTestPipe(pt.buffer, cancel)
	pt.mu.Lock()
	pt.pipes = append(pt.pipes, p)
	pt.mu.Unlock()
	w := &pipeResponse{header: http.Header{}, pipe: p, status: make(chan int, 1)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = pt.route.ServeHTTP(w, r, nil)
		w.WriteHeader(http.StatusOK) // nothing written: an empty 200, as net/http answers
		p.closeWrite()
		cancel()
	}()
	var status int
	select {
	case status = <-w.status:
	case <-req.Context().Done():
		p.Close()
		<-served
		return nil, req.Context().Err()
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, Body: p, ContentLength: -1, Request: req,
	}, nil
}

// pipeResponse is the route's http.ResponseWriter: what it writes goes
// into the pipe; SetWriteDeadline (which http.ResponseController finds)
// sets the pipe's write deadline.
type pipeResponse struct {
	header http.Header
	sent   http.Header // the header as it was when WriteHeader was called
	pipe   *testPipe
	status chan int
	once   sync.Once
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(code int) {
	w.once.Do(func() {
		w.sent = w.header.Clone()
		w.status <- code
	})
}

func (w *pipeResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pipe.write(p)
}

func (w *pipeResponse) Flush() {}

func (w *pipeResponse) SetWriteDeadline(d time.Time) error { return w.pipe.setWriteDeadline(d) }

// testPipe carries a response's bytes to its client, through a buffer of
// a fixed size, as a socket's buffers do: a write blocks while the buffer
// is full, until the client reads, the write deadline passes or either
// side closes. Closing the client's side (Close) cancels the request, as
// net/http does when a client goes away.
type testPipe struct {
	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte
	max      int
	wclosed  bool // the handler is done: the client reads what is left, then EOF
	rclosed  bool // the client has gone
	waiting  bool // a write waits for room
	deadline time.Time
	timer    *time.Timer
	cancel   context.CancelFunc
}

func newTestPipe(size int, cancel context.CancelFunc) *testPipe {
	p := &testPipe{max: max(size, 1), cancel: cancel}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *testPipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(b) {
		switch {
		case p.rclosed || p.wclosed:
			return n, io.ErrClosedPipe
		case !p.deadline.IsZero() && !time.Now().Before(p.deadline):
			return n, os.ErrDeadlineExceeded
		}
		if room := p.max - len(p.buf); room > 0 {
			k := min(room, len(b)-n)
			p.buf = append(p.buf, b[n:n+k]...)
			n += k
			p.cond.Broadcast()
			continue
		}
		p.waiting = true
		p.cond.Wait()
		p.waiting = false
	}
	return n, nil
}

// stalled reports whether a write waits for the client to read.
func (p *testPipe) stalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting
}

func (p *testPipe) setWriteDeadline(d time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deadline = d
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if !d.IsZero() {
		// wake the pending write when the deadline passes (at once for
		// one in the past)
		p.timer = time.AfterFunc(time.Until(d), func() {
			p.mu.Lock()
			p.cond.Broadcast()
			p.mu.Unlock()
		})
	}
	p.cond.Broadcast()
	return nil
}

// Read implements io.Reader for the client.
func (p *testPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 {
		switch {
		case p.rclosed:
			return 0, io.ErrClosedPipe
		case p.wclosed:
			return 0, io.EOF
		}
		p.cond.Wait()
	}
	n := copy(b, p.buf)
	p.buf = p.buf[:copy(p.buf, p.buf[n:])]
	p.cond.Broadcast()
	return n, nil
}

// Close implements io.Closer for the client: it goes away.
func (p *testPipe) Close() error {
	p.mu.Lock()
	p.rclosed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.cancel()
	return nil
}

// closeWrite ends the response: the handler has returned.
func (p *testPipe) closeWrite() {
	p.mu.Lock()
	p.wclosed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// ids returns the ids of receipts.
func ids(rs []transport.Receipt) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// messages returns n messages to topic, their data numbered and padded
// to size bytes.
func messages(topic string, n, size int) []transport.Message {
	msgs := make([]transport.Message, n)
	pad := strings.Repeat("x", size)
	for i := range msgs {
		msgs[i] = transport.Message{Topics: []string{topic}, Data: fmt.Sprintf("%d %s", i, pad), Retry: -1}
	}
	return msgs
}

// TestHarnessStream: through the harness, a stream starts with its retry
// hint and the hub's position, and an event published then arrives with
// its id, type and data.
func TestHarnessStream(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{})
	s := hs.open("/events?topic=a", nil)
	if ct := s.Resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if f, err := s.Next(wait); err != nil || f.Kind != ssetest.KindRetry {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	if f, err := s.Next(wait); err != nil || f.Kind != ssetest.KindID || f.LastID == "" {
		t.Fatalf("second frame %+v, %v", f, err)
	}
	rs := hs.publishAll(transport.Message{Topics: []string{"a"}, Type: "custom", Data: "multi\nline", Retry: -1})
	if f := nextEvent(t, s); f.LastID != rs[0].ID || f.Type != "custom" || f.Data != "multi\nline" {
		t.Fatalf("got %+v, want the event %s", f, rs[0].ID)
	}
	if rs[0].Subscribers != 1 {
		t.Errorf("queued for %d subscribers, want 1", rs[0].Subscribers)
	}
	s.Close()
	hs.subscribers(0)
	if n := hs.disconnects(endClient); n != 1 {
		t.Errorf("%d client disconnects counted, want 1", n)
	}
}

// TestHubFanOut: one publish of a 1,000-event burst reaches each of 100
// subscribers of its topic that read as fast as they can, whole and in
// order, on their first connection (a burst is not slowness: none is
// dropped as slow), and no subscriber of another topic; an event of
// several topics reaches a subscriber of them all once, counted once.
// (Was TestBurstReachesEveryReader, over Caddy.)
func TestHubFanOut(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{})
	const readers, events = 100, 1000
	client := hs.client(64 << 10)
	streams := make([]*ssetest.Stream, readers)
	for i := range streams {
		streams[i] = hs.openWith(client, "/events?topic=burst", nil)
	}
	others := make([]*ssetest.Stream, 5)
	for i := range others {
		others[i] = hs.openWith(client, "/events?topic=other", nil)
	}
	multi := hs.openWith(client, "/events?topic=d1&topic=d2&topic=d3", nil)

	rs := hs.publishAll(messages("burst", events, 64)...)
	for i, r := range rs {
		if r.Subscribers != readers {
			t.Fatalf("event %d queued for %d subscribers, want %d", i, r.Subscribers, readers)
		}
	}
	want := strings.Join(ids(rs), ",")
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() {
			if got := readN(t, s, events); strings.Join(got, ",") != want {
				t.Errorf("reader %d got %d events, not the %d published in order", i, len(got), events)
			}
		})
	}
	wg.Wait()

	marker := hs.publish("marker", "other")
	for i, s := range others {
		if f := nextEvent(t, s); f.LastID != marker.ID {
			t.Fatalf("subscriber %d of another topic got %+v first, want the marker %s", i, f, marker.ID)
		}
	}

	once := hs.publish("once", "d1", "d2", "d3")
	if once.Subscribers != 1 {
		t.Errorf("an event of three topics queued for %d subscribers, want 1", once.Subscribers)
	}
	second := hs.publish("second", "d2")
	if f := nextEvent(t, multi); f.LastID != once.ID {
		t.Fatalf("got %+v, want %s", f, once.ID)
	}
	if f := nextEvent(t, multi); f.LastID != second.ID {
		t.Fatalf("the event of three topics came twice: got %+v, want %s", f, second.ID)
	}

	if n := hs.disconnects(endSlow); n != 0 {
		t.Fatalf("%d readers dropped as slow", n)
	}
	if n := hs.hub.Stats().Subscribers; n != readers+len(others)+1 {
		t.Fatalf("%d subscribers left, want %d", n, readers+len(others)+1)
	}
}

// reader reads a stream's events in the background until one has the
// data "stop", and returns their ids then.
func reader(t *testing.T, s *ssetest.Stream) func() []string {
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := s.NextEvent(wait)
			if err != nil {
				t.Errorf("the reader, after %d events: %v", len(got), err)
				return
			}
			if f.Data == "stop" {
				return
			}
			got = append(got, f.LastID)
		}
	}()
	return func() []string {
		<-done
		return got
	}
}

// drainDropped reads what a dropped stream was sent, until it ends, and
// returns the ids of its events.
func drainDropped(t *testing.T, s *ssetest.Stream) []string {
	t.Helper()
	var got []string
	for {
		f, err := s.Next(wait)
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("the dropped stream did not end: %v", err)
		}
		if f.Kind == ssetest.KindEvent {
			got = append(got, f.LastID)
		}
	}
}

// TestHubSlowDropBytes: a subscriber that reads nothing, on a route with
// buffer 64KiB and a hub that keeps 200 events, is dropped as slow once
// the events it has yet to be sent have left the history and the
// delivery window, while one that reads gets every event and publishing
// never waits. The dropped client resumes with a reset, since what it
// missed is gone. (Was TestNonReaderIsDroppedReaderGetsAll's rule, over
// Caddy; it stays there for the protocols.)
func TestHubSlowDropBytes(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{Events: 200}, &Subscribe{BufferSize: 64 << 10})
	if w := hs.hub.Stats().Window; w.MaxBytes != 64<<10 {
		t.Fatalf("the hub's window is %d bytes, want 64 KiB", w.MaxBytes)
	}
	slowClient := hs.client(4096)
	slow := hs.openWith(slowClient, "/events?topic=nr", nil)
	slowSub := hs.only("nr")
	fast := hs.open("/events?topic=nr", nil)

	// the reader reads each event before the next is published: it
	// keeps up, however busy the machine (a publish here costs far less
	// than one through Caddy)
	payload := strings.Repeat("y", 8<<10)
	var want []string
	pastStalls := 0
	for i := 0; i < 5000 && hs.disconnects(endSlow) == 0; i++ {
		id := hs.publish(payload, "nr").ID
		want = append(want, id)
		if pastStall(slowClient, slowSub) {
			pastStalls++
		}
		if f := nextEvent(t, fast); f.LastID != id {
			t.Fatalf("the reader got %+v, want %s", f, id)
		}
	}
	if hs.disconnects(endSlow) == 0 {
		t.Fatalf("the subscriber that reads nothing was not dropped after %d events of 8 KiB", len(want))
	}
	if pastStalls == 0 {
		t.Error("no publish returned while the slow subscriber's writes were stalled: publishing waited for it")
	}
	hs.subscribers(1)
	if n := hs.disconnects(endSlow); n != 1 || slowSub.endReason() != endSlow {
		t.Errorf("%d slow disconnects counted, the non-reader's stream %q; want 1, the non-reader's", n, slowSub.endReason())
	}
	drainDropped(t, slow)
	resumed := hs.open("/events?topic=nr", http.Header{"Last-Event-ID": {slow.LastID()}})
	if f := nextEvent(t, resumed); f.Type != "reset" {
		t.Fatalf("resumed with %q, want a reset", f.Type)
	}
	t.Logf("dropped after %d events of 8 KiB; %d published while its writes were stalled", len(want), pastStalls)
}

// TestHubSlowDropTime: a subscriber that stops reading while everything
// it has yet to be sent is still in the history is dropped as slow once
// its writes have made no progress for write_timeout, and not before;
// publishing never waits for it, another subscriber gets everything, and
// the slow one resumes from history without loss. (Was
// TestSlowSubscriberIsDropped, over Caddy.)
func TestHubSlowDropTime(t *testing.T) {
	t.Parallel()
	const writeTimeout = time.Second
	hs := newHarness(t, transport.Limits{Events: 5000}, &Subscribe{WriteTimeout: caddy.Duration(writeTimeout)})
	patient := harnessRoute(t, hs.hub, &Subscribe{}) // default write_timeout: the reader's and the resumption's
	patientClient := routeClient(patient, 64<<10)

	opened := time.Now()
	slowClient := hs.client(4096)
	slow := hs.openWith(slowClient, "/events?topic=s", nil)
	slowSub := hs.only("s")
	fastGot := reader(t, hs.openWith(patientClient, "/events?topic=s", nil))

	// 2 MiB of events of 64 KiB, more than the delivery window: the slow
	// one's writes stall, and it is dropped after write_timeout, while
	// the other one gets everything
	payload := strings.Repeat("x", 64<<10)
	var want []string
	pastStalls := 0
	publish := func() { // counting the publishes that returned while it is stalled
		want = append(want, hs.publish(payload, "s").ID)
		if pastStall(slowClient, slowSub) {
			pastStalls++
		}
	}
	for range 32 {
		publish()
	}
	// on a busy machine the slow one's writer may stall only after those:
	// then one more publish, made while it is stalled, must return before
	// it is dropped (the pipe's state is polled: nothing to await)
	for deadline := time.Now().Add(wait); pastStalls == 0 && slowSub.endReason() == endNone && time.Now().Before(deadline); {
		if pastStall(slowClient, slowSub) {
			publish()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	hs.subscribers(1)
	dropped := time.Since(opened)
	if dropped < writeTimeout {
		t.Fatalf("dropped %v after it opened, before its write_timeout (%v)", dropped, writeTimeout)
	}
	after := hs.publish("after the drop", "s")
	if after.Subscribers != 1 {
		t.Fatalf("an event published after the drop went to %d subscribers, want the reader", after.Subscribers)
	}
	want = append(want, after.ID)
	if pastStalls == 0 {
		t.Error("no publish returned while the slow subscriber's writes were stalled: publishing waited for it")
	}
	if n := hs.disconnects(endSlow); n != 1 {
		t.Errorf("%d slow disconnects counted, want 1", n)
	}
	hs.publish("stop", "s")
	got := fastGot()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("the reader got %d of %d events, or not in order", len(got), len(want))
	}

	// the slow client reads again: its stream ends, it resumes from
	// history and gets everything
	slowGot := drainDropped(t, slow)
	s := hs.openWith(patientClient, "/events?topic=s", http.Header{"Last-Event-ID": {slow.LastID()}})
	for len(slowGot) < len(got) {
		f := nextEvent(t, s)
		if f.Type == "reset" {
			t.Fatal("unexpected reset")
		}
		slowGot = append(slowGot, f.LastID)
	}
	if strings.Join(slowGot, ",") != strings.Join(got, ",") {
		t.Fatalf("the slow subscriber's events differ from the published ones")
	}
	t.Logf("dropped %v after it opened", dropped.Round(time.Millisecond))
}

// TestHubReplaySeam reconnects a subscriber of two topics over and over,
// each time with the id of the last event it got, while publishers keep
// publishing to those and other topics: each resumption's
// history and the live events that follow it meet at its seam, and the
// subscriber must receive every event of its topics exactly once, in
// order, with its data. (The rule of TestResumeWhilePublishing, which
// stays over Caddy and each protocol with fewer reconnections.)
func TestHubReplaySeam(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{Events: 100000}, &Subscribe{})
	resumeWhilePublishing(t, func(data string, topics []string) (publishResult, error) {
		r := hs.publish(data, topics...)
		return publishResult{ID: r.ID, Topics: r.Topics}, nil
	}, func(header http.Header) *ssetest.Stream {
		return hs.open("/events?topic=ra&topic=rb", header)
	}, 500, 100, time.Millisecond)
}

// TestHubSeamUnderLoad opens 50 resumptions at once, each from a
// different point of a topic's history, while a publisher publishes to
// it: each gets the events after its point once, in order, up to the
// last one published, and a reset for none.
func TestHubSeamUnderLoad(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{Events: 100000}, &Subscribe{})
	before := ids(hs.publishAll(messages("seam", 100, 8)...))
	published := slices.Clone(before)
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Go(func() {
		for range 2000 {
			select {
			case <-stop:
				return
			default:
			}
			published = append(published, hs.publish("during", "seam").ID)
		}
	})
	var wg sync.WaitGroup
	results := make([][]string, 50)
	streams := make([]*ssetest.Stream, 50)
	for i := range streams {
		streams[i] = hs.open("/events?topic=seam", http.Header{"Last-Event-ID": {before[i*2]}})
	}
	close(stop)
	pubWG.Wait()
	last := hs.publish("last", "seam").ID
	published = append(published, last)
	for i, s := range streams {
		wg.Go(func() {
			for {
				f, err := s.NextEvent(wait)
				if err != nil {
					t.Errorf("resumption %d after %d events: %v", i, len(results[i]), err)
					return
				}
				results[i] = append(results[i], f.LastID)
				if f.LastID == last || f.Type == "reset" {
					return
				}
			}
		})
	}
	wg.Wait()
	for i, got := range results {
		if want := published[i*2+1:]; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("resumption %d from event %d got %d events, want the %d after it in order (first difference at %d)",
				i, i*2, len(got), len(want), firstDiff(got, want))
		}
	}
	t.Logf("%d events published", len(published))
}

// TestHubPausedReaderCatchesUpFromHistory: a subscriber that stops
// reading while 6 MiB of events are published (more than its buffer and
// the 64 KiB delivery window hold, less than the history) is not
// dropped: when it reads again, its stream reads the history from its
// position, a page at a time, and the client gets every event once, in
// order, on its first connection. (The rule of
// TestPausedReaderCatchesUpFromHistory, which stays over Caddy and each
// protocol.)
func TestHubPausedReaderCatchesUpFromHistory(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{Events: 5000}, &Subscribe{BufferSize: 64 << 10})
	s := hs.openWith(hs.client(4096), "/events?topic=p", nil)
	checkCaughtUpFromHistory(t, hs, s, hs.publishAll(messages("p", 96, 64<<10)...))
}

// checkCaughtUpFromHistory checks that s, a paused reader, gets the events
// of rs, every one in order, without being dropped as slow, some of them
// from the history.
func checkCaughtUpFromHistory(t *testing.T, hs *harness, s *ssetest.Stream, rs []transport.Receipt) {
	t.Helper()
	if got := readN(t, s, len(rs)); !slices.Equal(got, ids(rs)) {
		t.Fatalf("got %d of %d events, or not in order", len(got), len(rs))
	}
	st := hs.hub.Stats()
	if st.Disconnects["slow"] != 0 {
		t.Fatal("the paused reader was dropped as slow")
	}
	if st.Replayed == 0 {
		t.Fatal("nothing was read from the history: the test no longer covers it")
	}
	t.Logf("%d of %d events came from the history", st.Replayed, len(rs))
}

// TestHubLongReplayArrivesAtOnce: a resumption whose replay is many pages
// long, with nothing published meanwhile, is sent whole at once: the
// stream reads on after its first page without waiting for an event or
// a heartbeat (here a minute away). (The rule of
// TestLongReplayArrivesAtOnce, which stays over Caddy and each protocol.)
func TestHubLongReplayArrivesAtOnce(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Heartbeat: caddy.Duration(time.Minute)})
	rs := hs.publishAll(messages("long", 300, 1<<10)...) // 300 KiB: five pages
	want := ids(rs)
	start := time.Now()
	s := hs.open("/events?topic=long", http.Header{"Last-Event-ID": {want[0]}})
	if got := readN(t, s, len(want)-1); strings.Join(got, ",") != strings.Join(want[1:], ",") {
		t.Fatalf("got %d of %d events, or not in order", len(got), len(want)-1)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the replay took %v", d)
	}
}

// TestHubReplayLatestThenLive: a route's replay sends a new stream the
// newest events first, then the live ones, and a client that got no
// event before it left resumes from where it connected.
func TestHubReplayLatestThenLive(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Replay: 3})
	for i := range 5 {
		hs.publish(fmt.Sprint(i), "latest")
	}
	s := hs.open("/events?topic=latest", nil)
	for i := 2; i < 5; i++ {
		if f := nextEvent(t, s); f.Data != fmt.Sprint(i) {
			t.Fatalf("replayed %q, want %d", f.Data, i)
		}
	}
	if live := hs.publish("live", "latest"); nextEvent(t, s).LastID != live.ID {
		t.Fatal("the live event did not follow the replay")
	}

	quiet := hs.open("/events?topic=quiet", nil)
	var pos string
	for pos == "" {
		f, err := quiet.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == ssetest.KindID {
			pos = f.LastID
		}
	}
	quiet.Close()
	missed := hs.publish("while away", "quiet")
	quiet = hs.open("/events?topic=quiet", http.Header{"Last-Event-ID": {pos}})
	if f := nextEvent(t, quiet); f.LastID != missed.ID || f.Type != "message" {
		t.Fatalf("resumed with %s %s, want %s", f.Type, f.LastID, missed.ID)
	}
}

// TestHubInterrupt: when a transport cannot deliver every event in order,
// it interrupts topics (Hub.Interrupt): their streams end with a final
// retry hint, counted as resyncs, the others go on, and an interrupted
// client resumes from history with nothing lost; nil interrupts every
// stream. (Was TestInterruptEndsTheStreamsOfItsTopics, over Caddy and
// each protocol.)
func TestHubInterrupt(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{})
	a := hs.open("/events?topic=ia", nil)
	b := hs.open("/events?topic=ib", nil)
	first := hs.publish("both", "ia", "ib").ID
	for _, s := range []*ssetest.Stream{a, b} {
		if f := nextEvent(t, s); f.LastID != first {
			t.Fatalf("got %q, want %s", f.LastID, first)
		}
	}

	hs.hub.Interrupt([]string{"ia", "nobody"}, "gap")
	frames, err := a.ReadAll(wait)
	if err != nil || len(frames) == 0 || frames[len(frames)-1].Kind != ssetest.KindRetry {
		t.Fatalf("the interrupted stream ended with %+v (%v), want a final retry", frames, err)
	}
	if r := frames[len(frames)-1].Retry; r < int(minFinalRetry/2/time.Millisecond) {
		t.Fatalf("final retry %d ms, want at least %v", r, minFinalRetry/2)
	}
	missed := hs.publish("while away", "ia", "ib").ID
	if f := nextEvent(t, b); f.LastID != missed {
		t.Fatalf("the other stream got %q, want %s", f.LastID, missed)
	}
	resumed := hs.open("/events?topic=ia", http.Header{"Last-Event-ID": {a.LastID()}})
	if f := nextEvent(t, resumed); f.Type == "reset" || f.LastID != missed {
		t.Fatalf("resumed with %s %q, want %s", f.Type, f.LastID, missed)
	}

	hs.hub.Interrupt(nil, "epoch")
	for name, s := range map[string]*ssetest.Stream{"b": b, "resumed": resumed} {
		if _, err := s.ReadAll(wait); err != nil {
			t.Fatalf("stream %s did not end: %v", name, err)
		}
	}
	eventually(t, "three resyncs counted", func() bool { return hs.disconnects(endResync) == 3 })
	hs.subscribers(0)
}

// TestHubStuckWritersDelayNoOne: more clients than the wake gate has
// grants, that never read, each stuck in the replay of a large history
// (a bogus Last-Event-ID) and woken by an event of their topic, delay no
// other subscriber: neither one connected before nor one that joins
// after gets its events later than at once (they used to wait for the
// gate's grants, held by the stuck writers, until a write timeout cut
// them). Then the stuck streams, which make no progress, end as slow
// after write_timeout. (Was TestClientsThatNeverReadDelayNoOne, over
// Caddy.)
func TestHubStuckWritersDelayNoOne(t *testing.T) {
	t.Parallel()
	const attackers = wakeGrants + 2
	hs := newHarness(t, transport.Limits{Events: 1000}, &Subscribe{WriteTimeout: caddy.Duration(3 * time.Second)})
	hs.publishAll(messages("big", 16, 64<<10)...) // 1 MiB: each stuck writer blocks in its first page

	before := hs.open("/events?topic=other", nil)
	stuck := hs.client(4096)
	for range attackers {
		hs.openWith(stuck, "/events?topic=big", http.Header{"Last-Event-ID": {"bogus"}})
	}
	hs.subscribers(attackers + 1)
	hs.publish("wake the stuck writers", "big")

	after := hs.open("/events?topic=other", nil)
	id := hs.publish("for the others", "other").ID
	for name, s := range map[string]*ssetest.Stream{"connected before": before, "joined after": after} {
		if f := nextEvent(t, s); f.LastID != id {
			t.Fatalf("%s: got %q, want %s", name, f.LastID, id)
		}
	}
	if n := hs.disconnects(endSlow); n != 0 {
		t.Fatalf("%d stuck streams were dropped before the others got their event: they waited for write_timeout", n)
	}
	eventually(t, "every stuck stream ends as slow", func() bool { return hs.disconnects(endSlow) == attackers })
	hs.subscribers(2)
	id = hs.publish("still there", "other").ID
	if f := nextEvent(t, before); f.LastID != id {
		t.Fatalf("got %q, want %s", f.LastID, id)
	}
}

// TestHubLiveAtHeaders publishes the moment the response headers arrive,
// as browser code does in onopen, 300 times: the event must always
// arrive (the stream is subscribed before its headers go out).
// TestLiveAtHeaders does it over Caddy and each protocol.
func TestHubLiveAtHeaders(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{})
	client := hs.client(64 << 10)
	for i := range 300 {
		topic := fmt.Sprint("live-", i)
		s := hs.openWith(client, "/events?topic="+topic, nil)
		want := hs.publish(fmt.Sprint("event-", i), topic)
		if f := nextEvent(t, s); f.LastID != want.ID {
			t.Fatalf("iteration %d: got %+v, want %s", i, f, want.ID)
		}
		s.Close()
	}
}
