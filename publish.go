package caddysse

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/access"
	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Publish))
}

// Defaults of the sse_publish handler.
const (
	// DefaultMaxSize is the largest publish request body: 1 MiB.
	DefaultMaxSize = 1 << 20
)

// Publish is the sse_publish handler: a POST publishes one event, or an
// array of events, to a hub. It has no authentication of its own: protect
// its route with Caddy's matchers and handlers (remote_ip, basic_auth,
// forward_auth, ...).
//
// Bodies: application/x-www-form-urlencoded or multipart/form-data with
// the fields topic (repeatable), data, event (or type) and retry;
// application/json with an object {"topic", "event", "data", "retry"} or
// an array of them; anything else is the data itself, with topic and
// event in the query string (see decode.go). The answer is JSON: the
// event's id, its topics and the number of local subscribers it was
// queued for. A request with an Idempotency-Key header is published once:
// its repetitions get the first one's answer (see idempotency.go).
//
// A body of text/event-stream or application/x-ndjson is a stream of
// events, each published as soon as it is complete (see
// ingest.go).
type Publish struct {
	// The hub to publish to. Default: "default".
	Hub string `json:"hub,omitempty"`

	// Topic templates, with placeholders; when set, they are the topics of
	// every event published through this route and the request's own are
	// ignored. A template whose result is empty, or whose placeholders are
	// unknown or empty, is dropped.
	Topics []string `json:"topics,omitempty"`

	// The largest request body, in bytes; for a streaming publish, the
	// largest data of each of its events (and line). Default: 1 MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// How long a streaming publish may send nothing before it is ended
	// with 408. While a stream is read, it replaces the server's
	// read_body_idle timeout. Default: 1m.
	StreamTimeout caddy.Duration `json:"stream_timeout,omitempty"`

	// Origins allowed to publish from other sites, with credentials; "*"
	// allows any origin, without credentials.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	// The most streaming publishes the route reads at once; beyond, a
	// stream is refused with 503 and Retry-After before its body is read.
	// Each holds up to about twice max_size in memory while it is read.
	// Default: 100.
	MaxStreams int `json:"max_streams,omitempty"`

	// Topic patterns, with placeholders: every topic of every event a
	// request publishes must match one of them, else the request is
	// refused with 403 before anything is published (a streaming publish
	// ends at the first event refused). See the sse handler's allow.
	Allow []string `json:"allow,omitempty"`

	// Publishes must carry a signed token that grants their topics (its
	// claim sse.publish); an expired one is refused with 401.
	Token *TokenConfig `json:"token,omitempty"`

	hub   *Hub
	cors  *corsPolicy
	guard *guard

	tokenPlaceholders bool // the route's templates have placeholders of the token
	streams           *publishStreams
	logger            *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*Publish) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_publish",
		New: func() caddy.Module { return new(Publish) },
	}
}

// Provision sets up the handler: its defaults, then their checks, as the
// sse handler does.
func (p *Publish) Provision(ctx caddy.Context) error {
	p.setDefaults()
	if err := p.validate(); err != nil {
		return err
	}
	hub, err := lookupHub(ctx, p.Hub)
	if err != nil {
		return err
	}
	p.hub = hub
	p.cors = newCORSPolicy(p.CORSOrigins, "POST")
	if p.guard, err = newGuard(p.Allow, p.Token, true); err != nil {
		return err
	}
	p.tokenPlaceholders = usesTokenPlaceholders(p.Topics, p.Allow)
	p.logger = ctx.Logger()
	p.streams = &publishStreams{max: p.MaxStreams}
	return onEvent(ctx, "stopping", eventHandler{"sse_publish: end the streaming publishes of the stopping config", p.shutdown})
}

func (p *Publish) setDefaults() {
	if p.Hub == "" {
		p.Hub = DefaultHubName
	}
	if p.MaxSize == 0 {
		p.MaxSize = DefaultMaxSize
	}
	if p.StreamTimeout == 0 {
		p.StreamTimeout = caddy.Duration(DefaultStreamTimeout)
	}
	if p.MaxStreams == 0 {
		p.MaxStreams = DefaultMaxStreams
	}
}

func (p *Publish) validate() error {
	switch {
	case p.MaxSize < 0:
		return fmt.Errorf("max_size must not be negative")
	case p.StreamTimeout < 0:
		return fmt.Errorf("stream_timeout must not be negative")
	case p.MaxStreams < 0:
		return fmt.Errorf("max_streams must not be negative")
	}
	return validateOrigins(p.CORSOrigins)
}

// Cleanup stops the route's token verifier.
func (p *Publish) Cleanup() error {
	p.guard.close()
	return nil
}

// shutdown ends the route's streaming publishes when its config stops (a
// reload, or Caddy's exit): Caddy would wait for them for ever. Their
// publishers get a 503 with the figures, and send the rest again to the
// new config.
func (p *Publish) shutdown() {
	if n := p.streams.stop(); n > 0 {
		p.logger.Info("ended the streaming publishes: the config is being replaced, or Caddy is stopping", zap.String("hub", p.Hub), zap.Int("streams", n))
	}
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The sse_publish
// handler always responds; it never calls next.
func (p *Publish) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if ok, _ := admit(p.cors, w, r, http.MethodPost, "publish"); !ok {
		return nil
	}
	tok, err := p.guard.authenticate(r)
	if err != nil {
		reason := refusedUnauthorized
		if errors.Is(err, access.ErrExpired) {
			reason = refusedExpired
		}
		p.hub.refusedFor(reason)
		writeRefusal(w, unauthorized(err))
		return nil
	}
	ph := setPlaceholders(r, tok, p.tokenPlaceholders)
	var forced []string
	if len(p.Topics) > 0 {
		topics, err := expandTopics(r, p.Topics)
		if err == nil {
			err = checkReserved(topics)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return nil
		}
		if len(topics) == 0 {
			writeError(w, http.StatusBadRequest, "this request has no topic to publish to (the route's topic templates gave none)")
			return nil
		}
		forced = topics
	}
	opts := publishOptions{forced: forced, maxSize: p.MaxSize, streamTimeout: time.Duration(p.StreamTimeout),
		streams: p.streams, logger: p.logger, grants: p.guard.grantsFor(r, tok)}
	ph.drop() // the request lives on (a stream, an ingest): it keeps no claims; a refusal ends it
	if e := servePublish(w, r, p.hub, opts); e != nil {
		if e.cause != nil {
			p.logger.Error("publish failed", zap.String("hub", p.Hub), zap.String("remote_addr", r.RemoteAddr),
				zap.Int("status", e.status), zap.Error(e.cause))
		}
		writeRefusal(w, e)
	}
	return nil
}

// servePublish decodes a publish request, publishes it to hub and answers
// it; a streaming body is published as it arrives (serveIngest). A refusal
// or a failure is returned unanswered, for the caller to answer (and log,
// for a failure of the server, which has a cause).
//
// A request with an Idempotency-Key holds its key on this node from before
// its body is read until it is answered: a request with the same key is
// refused with 409 meanwhile. The transport answers a repetition with the
// first request's receipts (and publishes nothing), or refuses another
// request under the same key (422).
func servePublish(w http.ResponseWriter, r *http.Request, hub *Hub, opts publishOptions) *requestError {
	key, err := idempotencyKey(r.Header)
	if err != nil {
		return asRequestError(err)
	}
	if key != "" {
		if !hub.claimKey(key) {
			return errKeyInFlight
		}
		defer hub.releaseKey(key)
	}
	if kind, _ := classifyBody(r.Header.Get("Content-Type")); kind.ingest() != notAStream {
		return serveIngest(w, r, hub, opts, kind.ingest(), key)
	}
	r.Body = http.MaxBytesReader(w, r.Body, opts.maxSize)
	msgs, array, err := readPublish(w, r, opts)
	if err != nil {
		return asRequestError(err)
	}
	for _, m := range msgs {
		if e := opts.grants.check(m.Topics); e != nil {
			hub.refusedFor(refusedForbidden)
			return e
		}
	}
	req := transport.PublishRequest{Messages: msgs, Key: key}
	if key != "" {
		req.Fingerprint = fingerprint(msgs)
	}
	receipts, err := hub.Publish(r.Context(), req)
	if err != nil {
		return publishError(err)
	}
	writeReceipts(w, receipts, array)
	return nil
}

// readPublish reads and decodes a publish body, as one of the route's
// publishes in progress: when the route's config stops (a reload, or
// Caddy's exit) while the body is still coming, the body gets endWait
// more and the request is then answered 503, so that a client that
// trickles a body never holds the stop.
func readPublish(w http.ResponseWriter, r *http.Request, opts publishOptions) ([]transport.Message, bool, error) {
	if opts.streams == nil {
		return decodePublish(r, opts.forced)
	}
	br := &bodyRead{rc: http.NewResponseController(w)}
	opts.streams.reading(br)
	msgs, array, err := decodePublish(r, opts.forced)
	opts.streams.remove(br)
	if err != nil && br.stopping.Load() {
		return nil, false, errStopping
	}
	return msgs, array, err
}

// writeReceipts answers a publish with its receipts: one object, or an
// array of them for an array request.
func writeReceipts(w http.ResponseWriter, receipts []transport.Receipt, array bool) {
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b := (*bp)[:0]
	if array {
		b = append(b, '[')
	}
	for i, rc := range receipts {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPublishResult(b, rc)
	}
	if array {
		b = append(b, ']')
	}
	*bp = append(b, '\n')
	writeJSONBytes(w, http.StatusOK, *bp)
}

// publishResult is the answer to a publish, per event, as
// appendPublishResult writes it (and clients such as caddy sse-publish
// read it).
type publishResult struct {
	ID          string   `json:"id"`
	Topics      []string `json:"topics"`
	Subscribers int      `json:"subscribers"`
}

// appendPublishResult appends the JSON answer for one published event:
// {"id": ..., "topics": [...], "subscribers": n}.
func appendPublishResult(b []byte, rc transport.Receipt) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, rc.ID)
	b = append(b, `,"topics":[`...)
	for i, t := range rc.Topics {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t)
	}
	b = append(b, `],"subscribers":`...)
	b = strconv.AppendInt(b, int64(rc.Subscribers), 10)
	return append(b, '}')
}

// bodyRead is a plain publish reading its body.
type bodyRead struct {
	rc       *http.ResponseController
	stopping atomic.Bool
}

// stop gives the body endWait to arrive.
func (br *bodyRead) stop() {
	br.stopping.Store(true)
	_ = br.rc.SetReadDeadline(time.Now().Add(endWait))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Publish)(nil)
	_ caddy.CleanerUpper          = (*Publish)(nil)
	_ caddyhttp.MiddlewareHandler = (*Publish)(nil)
)
