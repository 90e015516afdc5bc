package caddysse

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Defaults of the sse handler.
const (
	DefaultHeartbeat  = 15 * time.Second
	DefaultRetry      = 3 * time.Second
	DefaultBuffer     = 256
	DefaultMaxTopics  = 64
	DefaultResetEvent = "reset"
)

// capacityRetry is the least reconnection delay told to a client that is
// refused for capacity.
const capacityRetry = 5 * time.Second

// Handler is the sse handler: it answers GET requests with an event stream
// of the hub's events on the request's topics. A client that sends the id
// of the last event it received (Last-Event-ID) first gets every retained
// event it missed.
type Handler struct {
	// The hub to subscribe to. Default: "default".
	Hub string `json:"hub,omitempty"`

	// Topic templates, with placeholders; they set the topics of every
	// subscription of this route. A template that gives an empty result, or
	// whose placeholders are unknown or empty, is dropped; a request left
	// without topics is refused with 403. Without templates, the topics are
	// the request's "topic" query parameters, else "default".
	Topics []string `json:"topics,omitempty"`

	// The longest a stream stays silent: a comment line is sent when there
	// is nothing else. Default: 15s. Negative: no heartbeats.
	Heartbeat caddy.Duration `json:"heartbeat,omitempty"`

	// The reconnection delay sent to clients, made larger by a random 0-50%
	// per stream. Default: 3s.
	Retry caddy.Duration `json:"retry,omitempty"`

	// When positive, a stream ends after a random 80-100% of this, with a
	// retry hint; the client reconnects and resumes. Default: no limit.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// How many events may wait for one subscriber; a subscriber that falls
	// further behind is disconnected and resumes from history when it
	// reconnects. Default: 256.
	Buffer int `json:"buffer,omitempty"`

	// On a connection without a last event id, send up to this many of
	// the newest retained events first. Default: 0.
	Replay int `json:"replay,omitempty"`

	// The most topics one subscription may have. Default: 64.
	MaxTopics int `json:"max_topics,omitempty"`

	// The most subscribers the hub may have on this node; beyond, clients
	// are told to retry later. Default: 0, no limit.
	MaxSubscribers int `json:"max_subscribers,omitempty"`

	// Origins allowed to subscribe from other sites, with credentials;
	// "*" allows any origin, without credentials.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	// The type of the event that starts a stream whose resumption is
	// incomplete. Default: "reset". "off" sends none.
	ResetEvent string `json:"reset_event,omitempty"`

	// Take HTTP/1.x connections over from Go's HTTP server once a stream
	// has started (http.Hijacker): the server's buffers and goroutines are
	// freed for the stream's whole life, several times less memory per
	// subscriber, and events are written with one writev each, without
	// copying. Caddy then no longer sees the stream: the access log and the
	// request metrics record it when it is taken over, and server timeouts
	// no longer apply to it. HTTP/2 and HTTP/3 streams are not affected.
	// Default: off.
	Hijack bool `json:"hijack,omitempty"`

	hub     *Hub
	cors    *corsPolicy
	streams streamSet
	logger  *zap.Logger
	stop    chan struct{} // closed by Cleanup: ends the heartbeat ticker
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	if err := h.validate(); err != nil {
		return err
	}
	hub, err := lookupHub(ctx, h.Hub)
	if err != nil {
		return err
	}
	h.hub = hub
	h.cors = newCORSPolicy(h.CORSOrigins, "GET")
	h.streams.init()
	if err := onStopping(ctx, h.shutdown); err != nil {
		return err
	}
	h.stop = make(chan struct{})
	if h.Heartbeat > 0 || h.Hijack {
		go h.heartbeats(h.tick())
	}
	return nil
}

func (h *Handler) setDefaults() {
	if h.Hub == "" {
		h.Hub = DefaultHubName
	}
	if h.Heartbeat == 0 {
		h.Heartbeat = caddy.Duration(DefaultHeartbeat)
	}
	if h.Retry == 0 {
		h.Retry = caddy.Duration(DefaultRetry)
	}
	if h.Buffer == 0 {
		h.Buffer = DefaultBuffer
	}
	if h.MaxTopics == 0 {
		h.MaxTopics = DefaultMaxTopics
	}
	if h.ResetEvent == "" {
		h.ResetEvent = DefaultResetEvent
	}
}

func (h *Handler) validate() error {
	switch {
	case h.Retry < 0:
		return fmt.Errorf("retry must not be negative")
	case h.MaxAge < 0:
		return fmt.Errorf("max_age must not be negative")
	case h.Buffer < 0:
		return fmt.Errorf("buffer must not be negative")
	case h.Replay < 0:
		return fmt.Errorf("replay must not be negative")
	case h.MaxTopics < 0:
		return fmt.Errorf("max_topics must not be negative")
	case h.MaxSubscribers < 0:
		return fmt.Errorf("max_subscribers must not be negative")
	}
	if err := validateEventType(h.ResetEvent); err != nil {
		return fmt.Errorf("reset_event: %w", err)
	}
	return validateOrigins(h.CORSOrigins)
}

// lookupHub finds a hub declared in the sse app.
func lookupHub(ctx caddy.Context, name string) (*Hub, error) {
	appIface, err := ctx.App("sse")
	if err != nil {
		return nil, fmt.Errorf("loading sse app: %w", err)
	}
	hub := appIface.(*App).Hub(name)
	if hub == nil {
		return nil, fmt.Errorf("hub %q is not declared in the sse global option", name)
	}
	return hub, nil
}

// onStopping calls fn when this config stops, on reload or exit, before
// Caddy waits for open requests to finish.
func onStopping(ctx caddy.Context, fn func()) error {
	appIface, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %w", err)
	}
	err = appIface.(*caddyevents.App).On("stopping", stoppingHandler(fn))
	if err != nil {
		return fmt.Errorf("subscribing to the stopping event: %w", err)
	}
	return nil
}

// stoppingHandler adapts a function to caddyevents.Handler.
type stoppingHandler func()

// Handle implements caddyevents.Handler.
func (fn stoppingHandler) Handle(context.Context, caddy.Event) error {
	fn()
	return nil
}

// shutdownWait bounds how long the stopping of a config waits for its
// streams to write their final retry hint and end.
const shutdownWait = time.Second

// shutdown ends every stream of this handler, refuses new ones, and waits
// (briefly) for them to end: Caddy's HTTP server does not wait for streams
// whose connection was taken over, and would exit before they had written
// their final retry hint.
func (h *Handler) shutdown() {
	n := h.streams.close(endShutdown)
	if n == 0 {
		return
	}
	h.logger.Info("ending the streams of the old config", zap.String("hub", h.Hub), zap.Int("streams", n))
	if !h.streams.wait(shutdownWait) {
		h.logger.Warn("streams still open after the stop", zap.String("hub", h.Hub), zap.Duration("waited", shutdownWait))
	}
}

// Cleanup ends the handler's streams and its heartbeat ticker.
func (h *Handler) Cleanup() error {
	if h.stop != nil {
		close(h.stop)
	}
	h.shutdown()
	return nil
}

// probeInterval is how often connections taken over are probed when
// heartbeats are off.
const probeInterval = 5 * time.Second

// tick is the period of the heartbeat goroutine: a third of the heartbeat
// interval, so that no stream stays silent for much more than two thirds
// of it.
func (h *Handler) tick() time.Duration {
	if h.Heartbeat > 0 {
		return time.Duration(h.Heartbeat) / 3
	}
	return probeInterval
}

// heartbeats asks every stream that wrote nothing during a whole tick to
// send a heartbeat, and ends the streams whose connection, taken over, the
// client has closed.
func (h *Handler) heartbeats(interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
			h.streams.each(h.checkStream)
		}
	}
}

// checkStream is one stream's heartbeat tick.
func (h *Handler) checkStream(s *subscriber) {
	if out := s.conn.Load(); out != nil && out.peerClosed() {
		s.finish(endClient)
		return
	}
	if h.Heartbeat > 0 && !s.wrote.Swap(false) {
		s.beat.Store(true)
		s.wakeUp()
	}
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The sse handler
// always responds; it never calls next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if !admit(h.cors, w, r, http.MethodGet, "subscribe") {
		return nil
	}
	q := parseStreamQuery(r.URL.RawQuery)
	topics, status, err := h.subscriptionTopics(r, q)
	if err != nil {
		writeError(w, status, err.Error())
		return nil
	}
	return h.serveStream(w, r, topics, q)
}

// subscriptionTopics returns the topics of a subscription request, or the
// status and error to refuse it with.
func (h *Handler) subscriptionTopics(r *http.Request, q streamQuery) ([]string, int, error) {
	if len(h.Topics) > 0 {
		topics, err := expandTopics(r, h.Topics)
		if err != nil {
			return nil, http.StatusBadRequest, err
		}
		if len(topics) == 0 {
			return nil, http.StatusForbidden, errors.New("this request has no topic to subscribe to (the route's topic templates gave none)")
		}
		return h.checkTopicCount(topics)
	}
	values := q.topics
	if len(values) == 0 {
		return []string{defaultTopic}, 0, nil
	}
	if len(values) > h.MaxTopics {
		return h.checkTopicCount(values)
	}
	topics, err := requestTopics(values)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	return h.checkTopicCount(topics)
}

func (h *Handler) checkTopicCount(topics []string) ([]string, int, error) {
	if len(topics) > h.MaxTopics {
		return nil, http.StatusBadRequest, fmt.Errorf("%d topics requested; at most %d are allowed", len(topics), h.MaxTopics)
	}
	return topics, 0, nil
}

// lastEventID returns the id of the last event the client received, from
// the Last-Event-ID header, else the last_event_id or lastEventID query
// parameter.
func lastEventID(r *http.Request, q streamQuery) (string, bool) {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		return id, true
	}
	return q.lastID, q.lastID != ""
}

// minFinalRetry is the least spread of the reconnections of streams that
// the server ends.
const minFinalRetry = 2 * time.Second

// finalRetry is the retry hint of a stream the server ends (reload,
// shutdown, max_age), in milliseconds: uniform over [d/2, 3d/2) with d the
// configured retry, at least 2s, so that the clients of many streams ended
// at once come back spread over a few seconds.
func (h *Handler) finalRetry() int64 {
	d := max(time.Duration(h.Retry), minFinalRetry)
	return (d/2 + rand.N(d)).Milliseconds()
}

// jittered returns d made larger by a random 0-50%, in milliseconds.
func jittered(d time.Duration) int64 {
	return (d + rand.N(d/2+1)).Milliseconds()
}

// serveStream subscribes and streams until the client leaves or the
// stream is ended.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, topics []string, q streamQuery) error {
	start := time.Now()
	req := subscribeRequest{topics: topics, buffer: h.Buffer, maxSubscribers: h.MaxSubscribers}
	req.replay.LastEventID, req.replay.Resume = lastEventID(r, q)
	if !req.replay.Resume {
		req.replay.Latest = h.Replay
	}
	sub, rep, err := h.hub.Subscribe(r.Context(), req)
	if errors.Is(err, errOverCapacity) {
		h.hub.counters.disconnects[endCapacity].Add(1)
		h.logRefusal(r, topics, endCapacity)
		h.refuse(w, jittered(max(time.Duration(h.Retry), capacityRetry)), "this hub has reached its subscriber limit")
		return nil
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return nil
	}
	if !h.streams.add(sub) {
		// opened (and counted) while this config was stopping
		h.hub.Unsubscribe(sub)
		h.hub.counters.disconnects[endShutdown].Add(1)
		h.logRefusal(r, topics, endShutdown)
		h.refuse(w, h.finalRetry(), "this server is reloading or stopping")
		return nil
	}
	st := &stream{out: newResponseOutput(w), sub: sub}
	h.logOpen(r, sub, rep, req.replay)
	life := streamLife{start: start, remoteAddr: r.RemoteAddr, maxAge: h.startMaxAge(sub)}
	err = st.start(w, jittered(time.Duration(h.Retry)), rep, req.replay.LastEventID, h.resetEventType())
	if err != nil {
		h.endStream(sub, life, endClient)
		return nil
	}
	h.hub.counters.replayed.Add(uint64(len(rep.Events)))
	if h.Hijack && r.ProtoMajor == 1 {
		if out, err := takeOver(w, r); err == nil {
			h.runTakenOver(st, out, life)
			return nil
		} else if ce := h.logger.Check(zapcore.DebugLevel, "could not take the connection over"); ce != nil {
			ce.Write(zap.Error(err))
		}
	}
	h.endStream(sub, life, h.loop(st, r.Context().Done()))
	return nil
}

// refuse answers 200 with a retry hint and a comment, then closes:
// browsers give up on any other status, but retry after this.
func (h *Handler) refuse(w http.ResponseWriter, retryMS int64, why string) {
	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	b := transport.AppendRetry(nil, retryMS)
	b = transport.AppendComment(b, why)
	_, _ = w.Write(b)
	_ = http.NewResponseController(w).Flush()
}

// streamLife is what ending a stream needs to know of its start.
type streamLife struct {
	start      time.Time
	remoteAddr string
	maxAge     *time.Timer
}

// startMaxAge ends the subscriber's stream after a random 80-100% of
// max_age, if set.
func (h *Handler) startMaxAge(sub *subscriber) *time.Timer {
	if h.MaxAge <= 0 {
		return nil
	}
	lifetime := time.Duration(h.MaxAge) * 4 / 5
	lifetime += rand.N(time.Duration(h.MaxAge) - lifetime + 1)
	return time.AfterFunc(lifetime, func() { sub.finish(endMaxAge) })
}

// resetEventType is the type of the reset event, or "" for none.
func (h *Handler) resetEventType() string {
	if h.ResetEvent == "off" {
		return ""
	}
	return h.ResetEvent
}

// runTakenOver runs a stream whose connection was taken over, in a
// goroutine of its own, and lets net/http's goroutine go.
func (h *Handler) runTakenOver(st *stream, out *connOutput, life streamLife) {
	st.out = out
	st.sub.conn.Store(out)
	if st.sub.endReason() == endSlow { // dropped before it could be aborted
		out.abort()
	}
	go func() {
		reason := h.loop(st, nil)
		out.end(reason != endSlow && reason != endClient)
		h.endStream(st.sub, life, reason)
	}()
}

// loop writes live events until the stream ends, and says why it ended.
// done is closed when the client has gone (nil for a stream whose
// connection was taken over: its client's departure is noticed by the
// heartbeat goroutine's probe, or by a failed write).
func (h *Handler) loop(st *stream, done <-chan struct{}) endReason {
	for {
		select {
		case <-done:
			return endClient
		case <-st.sub.wake:
		}
		n, err := st.pump()
		if err != nil { // not delivered
			if reason := st.sub.endReason(); reason != endNone {
				return reason // e.g. slow: its connection was closed under the write
			}
			return endClient
		}
		h.hub.counters.delivered.Add(uint64(n))
		if reason := st.sub.endReason(); reason != endNone {
			if reason != endSlow && reason != endClient {
				_ = st.finish(h.finalRetry())
			}
			return reason
		}
	}
}

// endStream takes an ended stream out of the hub, counts and logs it.
func (h *Handler) endStream(sub *subscriber, life streamLife, reason endReason) {
	if life.maxAge != nil {
		life.maxAge.Stop()
	}
	h.streams.remove(sub)
	h.hub.Unsubscribe(sub)
	if reason != endSlow { // counted when dropped
		h.hub.counters.disconnects[reason].Add(1)
	}
	h.logClose(sub, life, reason)
}

// The logs of a stream's life, at debug level: never the payloads.

func (h *Handler) logOpen(r *http.Request, sub *subscriber, rep transport.Replay, q transport.ReplayQuery) {
	if ce := h.logger.Check(zapcore.DebugLevel, "stream opened"); ce != nil {
		ce.Write(zap.String("remote_addr", r.RemoteAddr), zap.String("hub", h.hub.name),
			zap.Strings("topics", sub.topics), zap.Bool("resume", q.Resume),
			zap.Bool("reset", rep.Reset), zap.Int("replayed", len(rep.Events)))
	}
}

func (h *Handler) logRefusal(r *http.Request, topics []string, reason endReason) {
	if ce := h.logger.Check(zapcore.DebugLevel, "stream refused"); ce != nil {
		ce.Write(zap.String("remote_addr", r.RemoteAddr), zap.String("hub", h.hub.name),
			zap.Strings("topics", topics), zap.Stringer("reason", reason))
	}
}

func (h *Handler) logClose(sub *subscriber, life streamLife, reason endReason) {
	if ce := h.logger.Check(zapcore.DebugLevel, "stream closed"); ce != nil {
		ce.Write(zap.String("remote_addr", life.remoteAddr), zap.String("hub", h.hub.name),
			zap.Strings("topics", sub.topics), zap.Duration("duration", time.Since(life.start)),
			zap.Stringer("reason", reason))
	}
}

// streamSet is the set of a handler's open streams.
type streamSet struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	empty  chan struct{} // closed once the set is closed and empty
}

func (ss *streamSet) init() {
	ss.subs = make(map[*subscriber]struct{})
	ss.empty = make(chan struct{})
}

// add adds s, unless the set was closed.
func (ss *streamSet) add(s *subscriber) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	ss.subs[s] = struct{}{}
	return true
}

func (ss *streamSet) remove(s *subscriber) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.subs, s)
	ss.signalEmpty()
}

// signalEmpty closes empty once the set is closed and empty.
func (ss *streamSet) signalEmpty() {
	if ss.empty == nil { // never initialised: the handler did not provision
		return
	}
	if ss.closed && len(ss.subs) == 0 {
		select {
		case <-ss.empty:
		default:
			close(ss.empty)
		}
	}
}

func (ss *streamSet) each(fn func(*subscriber)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for s := range ss.subs {
		fn(s)
	}
}

// close ends every stream for reason, refuses new ones, and returns how
// many it ended.
func (ss *streamSet) close(reason endReason) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.closed = true
	for s := range ss.subs {
		s.finish(reason)
	}
	ss.signalEmpty()
	return len(ss.subs)
}

// wait waits up to timeout for a closed set to empty, and reports whether
// it did.
func (ss *streamSet) wait(timeout time.Duration) bool {
	if ss.empty == nil {
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ss.empty:
		return true
	case <-t.C:
		return false
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
