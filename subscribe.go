package caddysse

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ssehub/caddy-sse/access"
	"github.com/ssehub/caddy-sse/internal/patternset"
	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Subscribe))
}

// Defaults of the sse handler.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultRetry        = 3 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultMaxTopics    = 64
	DefaultSendBuffer   = 256 << 10
	DefaultResetEvent   = "reset"
	DefaultExpiredEvent = "expired"
	DefaultDisconnect   = "disconnect"
)

// capacityRetry is the least reconnection delay told to a client that is
// refused for capacity.
const capacityRetry = 5 * time.Second

// Subscribe is the sse handler: it answers GET requests with an event
// stream of the hub's events on the request's topics. A client that sends
// the id of the last event it received (Last-Event-ID) first gets every
// retained event it missed.
type Subscribe struct {
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

	// How far a stream may fall behind, in wire bytes: the hub keeps at
	// least this much of its newest events for its streams, once for all
	// of them, beyond its history. A stream behind these reads the history
	// instead; one whose next event has left both is disconnected as slow,
	// and its client resumes from history (or gets a reset). A burst is
	// not slowness: a stream that reads at network speed keeps up with any
	// publish. The hub keeps the largest buffer of its routes.
	// Default: 1 MiB, unless buffer is set.
	BufferSize int64 `json:"buffer_size,omitempty"`

	// The same as a number of events, the meaning of a bare number in the
	// Caddyfile (version 1): the hub keeps at least this many of its
	// newest events; a reset then sends at most this many. Default: 0, use
	// buffer_size.
	Buffer int `json:"buffer,omitempty"`

	// The longest a stream may wait to write to its client: a client that
	// accepts nothing for this long (a piece of at most 32 KiB) is
	// disconnected as slow. Default: 30s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// On a connection without a last event id, send up to this many of
	// the newest retained events first. Default: 0.
	Replay int `json:"replay,omitempty"`

	// The most topics one subscription may have, its patterns included.
	// It also bounds the topics whose events the replay of a pattern
	// stream, or of replay_latest, merges: beyond, the replay keeps to the
	// newest events (a resumption is then a reset). Default: 64.
	MaxTopics int `json:"max_topics,omitempty"`

	// Requested topics with a "*" segment, or a last "**" segment, are
	// topic patterns (SPEC section 11): the stream gets every event of
	// the hub whose topics match one of them, once each, in id order, and
	// resumes as exactly as a stream of plain topics (or gets a reset). A
	// pattern must be covered by allow and by the token: every topic it
	// can match must be allowed. The hub's transport must serve patterns
	// (the memory transport does). Default: off, "*" is an ordinary
	// character of a topic.
	Patterns bool `json:"patterns,omitempty"`

	// On a connection without a last event id, send first the newest n
	// retained events of each topic of the stream (of each topic a
	// pattern matches; of at most max_topics topics, those published to
	// last), in id order, each once. When set, it takes the place of
	// replay. The
	// hub's transport must serve patterns. Default: 0, none.
	ReplayLatest int `json:"replay_latest,omitempty"`

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

	// The kernel's send buffer of an HTTP/1.x stream's connection
	// (SO_SNDBUF), in bytes: what a client that reads nothing can make the
	// kernel hold for it, and the server spend writing to it, before its
	// writes stall. Linux otherwise grows it up to net.ipv4.tcp_wmem's
	// largest (4 MiB by default) for every such client. It also bounds a
	// stream's throughput to about this much per round trip (256 KiB over
	// 100 ms: 2.5 MB/s). HTTP/2 and HTTP/3 connections, which carry other
	// requests, are left alone. Default: 256 KiB. Negative: the kernel's.
	SendBuffer int64 `json:"send_buffer,omitempty"`

	// Topic patterns, with placeholders: every topic of a subscription
	// must match one of them, else it is refused with 403. A segment "*"
	// matches one segment of a topic, "**" as the last one the rest; a
	// placeholder whose value is empty, or holds a "/" or a "*", drops its
	// pattern. Default: every topic is allowed.
	Allow []string `json:"allow,omitempty"`

	// Subscriptions must carry a signed token that grants their topics
	// (its claim sse.subscribe). An expired token is answered with the
	// expired event, and a stream ends with it when its token expires.
	Token *TokenConfig `json:"token,omitempty"`

	// At most this many open streams of the route per value of a
	// placeholder, on this node: beyond, the oldest stream of that value
	// ends with a disconnect event. Its value is also the subject that the
	// admin API's disconnect names.
	MaxStreamsPer *StreamsPer `json:"max_streams_per,omitempty"`

	// The type of the event that ends a stream whose token has expired
	// (its data: {"last_event_id": ...}). Default: "expired". "off" sends
	// none.
	ExpiredEvent string `json:"expired_event,omitempty"`

	// The type of the event that ends a stream disconnected by the admin
	// API or by max_streams_per (its data: {"reason": ...}). Default:
	// "disconnect". "off" sends none.
	DisconnectEvent string `json:"disconnect_event,omitempty"`

	// A placeholder, such as {http.sse.token.sub} or {http.auth.user.id},
	// whose value is a stream's member (SPEC section 11, presence): the
	// member is present on each of the stream's topics (on its pattern,
	// for a pattern stream) while it has a stream there, on any node, and
	// for the hub's presence_grace after. A request for which it is empty,
	// unknown or longer than 1024 bytes is not a member (its stream still
	// counts among the topic's streams). Streams of any route may follow a topic's members
	// with the meta-topic $presence/<topic>. Default: none, streams are
	// not members.
	Presence string `json:"presence,omitempty"`

	hub      *Hub
	cors     *corsPolicy
	guard    *guard
	streams  streamSet
	per      *streamsPer
	expiries expiries

	tokenPlaceholders bool // the route's templates have placeholders of the token
	logger            *zap.Logger
	stop              chan struct{} // closed by Cleanup: ends the heartbeat ticker
	unwindow          func()        // gives the route's delivery window back to the hub
}

// CaddyModule returns the Caddy module information.
func (*Subscribe) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse",
		New: func() caddy.Module { return new(Subscribe) },
	}
}

// Provision sets up the handler.
func (h *Subscribe) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	if err := h.validate(); err != nil {
		return err
	}
	hub, err := lookupHub(ctx, h.Hub)
	if err != nil {
		return err
	}
	if (h.Patterns || h.ReplayLatest > 0) && hub.patternT == nil {
		return fmt.Errorf("patterns and replay_latest need a transport that serves them: the %s transport of hub %q does not support patterns yet",
			hub.transportName, h.Hub)
	}
	h.hub = hub
	h.unwindow = hub.backlog.use(window{bytes: h.BufferSize, events: h.Buffer})
	h.cors = newCORSPolicy(h.CORSOrigins, "GET")
	if h.guard, err = newGuard(h.Allow, h.Token, false); err != nil {
		return err
	}
	h.per = newStreamsPer(h.MaxStreamsPer)
	var perKey []string
	if h.MaxStreamsPer != nil {
		perKey = []string{h.MaxStreamsPer.Key}
	}
	h.tokenPlaceholders = usesTokenPlaceholders(h.Topics, h.Allow, perKey, []string{h.Presence})
	if err := rememberConns(ctx); err != nil {
		return err
	}
	if err := onEvent(ctx, "stopping", eventHandler{"sse: end the streams of the stopping config", h.shutdown}); err != nil {
		return err
	}
	h.stop = make(chan struct{})
	go h.sweep(h.tick())
	return nil
}

func (h *Subscribe) setDefaults() {
	if h.Hub == "" {
		h.Hub = DefaultHubName
	}
	if h.Heartbeat == 0 {
		h.Heartbeat = caddy.Duration(DefaultHeartbeat)
	}
	if h.Retry == 0 {
		h.Retry = caddy.Duration(DefaultRetry)
	}
	if h.Buffer == 0 && h.BufferSize == 0 {
		h.BufferSize = DefaultBufferSize
	}
	if h.WriteTimeout == 0 {
		h.WriteTimeout = caddy.Duration(DefaultWriteTimeout)
	}
	if h.MaxTopics == 0 {
		h.MaxTopics = DefaultMaxTopics
	}
	if h.SendBuffer == 0 {
		h.SendBuffer = DefaultSendBuffer
	}
	if h.ResetEvent == "" {
		h.ResetEvent = DefaultResetEvent
	}
	if h.ExpiredEvent == "" {
		h.ExpiredEvent = DefaultExpiredEvent
	}
	if h.DisconnectEvent == "" {
		h.DisconnectEvent = DefaultDisconnect
	}
}

func (h *Subscribe) validate() error {
	switch {
	case h.Retry < 0:
		return fmt.Errorf("retry must not be negative")
	case h.MaxAge < 0:
		return fmt.Errorf("max_age must not be negative")
	case h.WriteTimeout < 0:
		return fmt.Errorf("write_timeout must not be negative")
	case h.Buffer < 0:
		return fmt.Errorf("buffer must not be negative")
	case h.BufferSize < 0:
		return fmt.Errorf("buffer_size must not be negative")
	case h.Replay < 0:
		return fmt.Errorf("replay must not be negative")
	case h.ReplayLatest < 0:
		return fmt.Errorf("replay_latest must not be negative")
	case h.MaxTopics < 0:
		return fmt.Errorf("max_topics must not be negative")
	case h.MaxSubscribers < 0:
		return fmt.Errorf("max_subscribers must not be negative")
	}
	for opt, typ := range map[string]string{"reset_event": h.ResetEvent, "expired_event": h.ExpiredEvent,
		"disconnect_event": h.DisconnectEvent} {
		if err := validateEventType(typ); err != nil {
			return fmt.Errorf("%s: %w", opt, err)
		}
	}
	if err := h.MaxStreamsPer.validate(); err != nil {
		return err
	}
	if err := validatePresence(h.Presence); err != nil {
		return err
	}
	return validateOrigins(h.CORSOrigins)
}

// Cleanup ends the handler's streams and its heartbeat ticker.
func (h *Subscribe) Cleanup() error {
	if h.stop != nil {
		close(h.stop)
	}
	h.shutdown()
	h.expiries.close()
	if h.unwindow != nil {
		h.unwindow()
	}
	h.guard.close()
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The sse handler
// always responds; it never calls next.
func (h *Subscribe) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if ok, why := admit(h.cors, w, r, http.MethodGet, "subscribe"); !ok {
		if why != "" {
			h.logRefusal(r, nil, why, nil)
		}
		return nil
	}
	if hasBody(r) {
		refuseBody(w, r)
		h.logRefusal(r, nil, "body", nil)
		return nil
	}
	q := parseStreamQuery(r.URL.RawQuery)
	tok, err := h.guard.authenticate(r)
	switch {
	case errors.Is(err, access.ErrExpired):
		h.hub.refusedFor(refusedExpired)
		h.logRefusal(r, nil, refusedExpired.String(), nil)
		h.expired(w, r, q)
		return nil
	case err != nil:
		h.hub.refusedFor(refusedUnauthorized)
		h.logRefusal(r, nil, refusedUnauthorized.String(), err)
		writeRefusal(w, unauthorized(err))
		return nil
	}
	ph := setPlaceholders(r, tok, h.tokenPlaceholders)
	topics, status, err := h.subscriptionTopics(r, q)
	if err != nil {
		h.logRefusal(r, nil, "topics", err)
		writeError(w, status, err.Error())
		return nil
	}
	topics, watched, err := presenceTopics(topics)
	if err != nil {
		h.logRefusal(r, nil, "topics", err)
		writeError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	plain, patterns := topics, []string(nil)
	if h.Patterns {
		plain, patterns = splitPatterns(topics)
	}
	gr := h.guard.grantsFor(r, tok)
	e := gr.check(plain)
	if e == nil {
		e = gr.checkPatterns(patterns)
	}
	if e == nil && watched != nil {
		e = h.checkWatched(gr, watched)
	}
	if e != nil {
		h.hub.refusedFor(refusedForbidden)
		h.logRefusal(r, topics, refusedForbidden.String(), e)
		writeRefusal(w, e)
		return nil
	}
	a := streamAuth{subject: h.per.value(r), member: h.member(r), watched: watched}
	if tok != nil {
		a.expires = tok.Expires
		if h.per == nil {
			a.subject = tok.Subject
		}
	}
	ph.drop() // the request lives on (a stream, an ingest): it keeps no claims; a refusal ends it
	return h.serveStream(w, r, plain, patterns, q, a)
}

// splitPatterns separates the topic patterns of a route with patterns
// (patternset.IsPattern) from its plain topics.
func splitPatterns(topics []string) (plain, patterns []string) {
	for i, t := range topics {
		if patternset.IsPattern(t) {
			if plain == nil {
				plain = append(make([]string, 0, len(topics)), topics[:i]...)
			}
			patterns = append(patterns, t)
		} else if plain != nil {
			plain = append(plain, t)
		}
	}
	if plain == nil { // no pattern among them
		return topics, nil
	}
	return plain, patterns
}

// streamAuth is what a stream keeps of its request's credentials.
type streamAuth struct {
	subject string    // see subscriber.subject
	expires time.Time // when its token expires; zero: never
	member  string    // its member, for presence; "" for none
	watched []string  // the topics whose presence it follows ($presence/<topic>)
}

// expired answers a subscription whose token has expired: a 200 with the
// expired event and a long retry hint, so that the page fetches a fresh
// token and resumes from the event's last_event_id, and a page that does
// not still comes back, slowly, instead of giving up.
func (h *Subscribe) expired(w http.ResponseWriter, r *http.Request, q streamQuery) {
	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	lastID, _ := lastEventID(r, q)
	_, _ = w.Write(h.endWords(endExpired, lastID))
	_ = http.NewResponseController(w).Flush()
}

// hasBody reports whether a request announces a body: a length, or (over
// HTTP/1.x) a chunked one.
func hasBody(r *http.Request) bool {
	return r.ContentLength > 0 || r.ContentLength < 0 && r.ProtoMajor == 1
}

// refuseBody refuses a subscription that comes with a body (EventSource
// never sends one), without reading it: over HTTP/1.x, net/http would
// read (and discard) the body before it sends any answer, and again when
// the handler returns, for as long as the client takes to send it, and a
// client that trickles it would hold a stop or a reload of the server.
// So the connection is closed after the answer (no reading before it),
// and reads on it fail from then on (none after).
func refuseBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	writeError(w, http.StatusBadRequest, "a subscription request has no body: send a GET without one")
	_ = http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
}

// subscriptionTopics returns the topics of a subscription request, or the
// status and error to refuse it with.
func (h *Subscribe) subscriptionTopics(r *http.Request, q streamQuery) ([]string, int, error) {
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

func (h *Subscribe) checkTopicCount(topics []string) ([]string, int, error) {
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
func (h *Subscribe) finalRetry() int64 {
	d := max(time.Duration(h.Retry), minFinalRetry)
	return (d/2 + rand.N(d)).Milliseconds()
}

// jittered returns d made larger by a random 0-50%, in milliseconds.
func jittered(d time.Duration) int64 {
	return (d + rand.N(d/2+1)).Milliseconds()
}

// serveStream subscribes and streams until the client leaves or the
// stream is ended.
func (h *Subscribe) serveStream(w http.ResponseWriter, r *http.Request, topics, patterns []string, q streamQuery, a streamAuth) error {
	began := time.Now()
	out := newResponseOutput(w)
	defer out.release()
	req := subscribeRequest{topics: topics, patterns: patterns, subject: a.subject, maxSubscribers: h.MaxSubscribers, out: out,
		member: a.member, presence: a.watched}
	req.replay.LastEventID, req.replay.Resume = lastEventID(r, q)
	if req.replay.Resume {
		req.replay.ResetLatest = h.Buffer
	} else {
		req.replay.Latest = h.Replay
		req.latestPerTopic = h.ReplayLatest
	}
	// a pattern stream, or a first connection with replay_latest, reads
	// the history through the transport's pattern replay, bounded by
	// max_topics
	req.byPatterns = len(patterns) > 0 || req.latestPerTopic > 0
	req.maxTopics = h.MaxTopics
	if len(patterns) > 0 {
		topics = append(slices.Clip(topics), patterns...) // for the logs
	}
	sub, rep, err := h.hub.Subscribe(r.Context(), req)
	if err != nil {
		h.refuseSubscription(w, r, topics, err)
		return nil
	}
	st := newStream(h, sub, out, r, began)
	if !h.streams.add(st) {
		// opened (and counted) while this config was stopping
		h.hub.Unsubscribe(sub, endShutdown)
		h.logRefusal(r, topics, endShutdown.String(), nil)
		h.refuse(w, h.finalRetry(), "this server is reloading or stopping")
		return nil
	}
	h.per.add(st)
	h.logOpen(r, sub, rep, req.replay)
	st.serve(w, r, rep, req.replay.LastEventID, a.expires)
	return nil
}

// expireAt has the route end st at t, when its token expires (the
// route's expiries keep one timer for all its streams).
func (h *Subscribe) expireAt(st *stream, t time.Time) {
	h.expiries.add(st, t)
}

// release takes an ended stream out of the route's expiries and its
// count of streams per subject.
func (h *Subscribe) release(st *stream) {
	if h.Token != nil {
		h.expiries.remove(st)
	}
	h.per.remove(st)
}

// hardWriteDeadline is the deadline that the server's write timeout
// (timeouts { write }) sets on a response that started at start, or zero
// if it has none. Caddy counts it from a few microseconds earlier.
func hardWriteDeadline(r *http.Request, start time.Time) time.Time {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || srv.WriteTimeout <= 0 {
		return time.Time{}
	}
	return start.Add(time.Duration(srv.WriteTimeout))
}

// refuseSubscription answers a subscription the hub did not take. Over
// capacity, or while the transport is unavailable, the answer is a 200
// with a retry hint of several seconds, so that browsers come back later
// instead of giving up for good.
func (h *Subscribe) refuseSubscription(w http.ResponseWriter, r *http.Request, topics []string, err error) {
	later := jittered(max(time.Duration(h.Retry), capacityRetry))
	switch {
	case errors.Is(err, errOverCapacity):
		h.hub.refused(endCapacity)
		h.logRefusal(r, topics, endCapacity.String(), nil)
		h.refuse(w, later, "this hub has reached its subscriber limit")
	case errors.Is(err, transport.ErrUnavailable):
		h.hub.refused(endUnavailable)
		h.logRefusal(r, topics, endUnavailable.String(), err)
		h.refuse(w, later, "this hub is unavailable for a moment")
	default:
		h.logger.Error("subscription failed", zap.String("hub", h.Hub), zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}

// refuse answers 200 with a retry hint and a comment, then closes:
// browsers give up on any other status, but retry after this.
func (h *Subscribe) refuse(w http.ResponseWriter, retryMS int64, why string) {
	setStreamHeaders(w)
	w.WriteHeader(http.StatusOK)
	b := transport.AppendRetry(nil, retryMS)
	b = transport.AppendComment(b, why)
	_, _ = w.Write(b)
	_ = http.NewResponseController(w).Flush()
}

// endWords is what a stream that the server ends for reason writes last:
// a retry hint, and for an expired token or a disconnection, the event
// that says so (unless it is off) and a retry hint of at least 30 s.
// lastID is the last event id the stream sent, else the client's.
func (h *Subscribe) endWords(reason endReason, lastID string) []byte {
	var typ string
	var data []byte
	switch reason {
	case endExpired:
		typ = h.ExpiredEvent
		data, _ = json.Marshal(expiredData{LastEventID: lastID})
	case endRevoked, endPerSubject:
		typ = h.DisconnectEvent
		data, _ = json.Marshal(disconnectData{Reason: disconnectReason(reason)})
	default:
		return transport.AppendRetry(nil, h.finalRetry())
	}
	b := transport.AppendRetry(nil, jittered(max(time.Duration(h.Retry), expiredRetry)))
	if typ == "off" {
		return b
	}
	return transport.AppendEvent(b, "", typ, -1, string(data))
}

// disconnectData is the data of the disconnect event.
type disconnectData struct {
	Reason string `json:"reason"`
}

// disconnectReason is the reason a disconnect event gives.
func disconnectReason(r endReason) string {
	if r == endPerSubject {
		return "max_streams_per"
	}
	return "revoked"
}

// resetEventType is the type of the reset event, or "" for none.
func (h *Subscribe) resetEventType() string {
	if h.ResetEvent == "off" {
		return ""
	}
	return h.ResetEvent
}

// The logs of a stream's life, at debug level: never the payloads.

func (h *Subscribe) logOpen(r *http.Request, sub *subscriber, rep transport.Replay, q transport.ReplayQuery) {
	if ce := h.logger.Check(zapcore.DebugLevel, "stream opened"); ce != nil {
		ce.Write(zap.String("remote_addr", r.RemoteAddr), zap.String("hub", h.hub.name),
			zap.Strings("topics", sub.topics), zap.Bool("resume", q.Resume),
			zap.Bool("reset", rep.Reset), zap.Int("replayed", len(rep.Events)))
	}
}

// logRefusal logs a subscription refused for reason (an end reason, such
// as capacity, or what refused it: origin, method, body, topics,
// unauthorized, forbidden, expired). err says why, when there is more to
// say; it never holds a token.
func (h *Subscribe) logRefusal(r *http.Request, topics []string, reason string, err error) {
	if ce := h.logger.Check(zapcore.DebugLevel, "stream refused"); ce != nil {
		ce.Write(zap.String("remote_addr", r.RemoteAddr), zap.String("hub", h.hub.name),
			zap.Strings("topics", topics), zap.String("reason", reason), zap.Error(err))
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Subscribe)(nil)
	_ caddy.CleanerUpper          = (*Subscribe)(nil)
	_ caddyhttp.MiddlewareHandler = (*Subscribe)(nil)
)
