package caddysse

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Publish))
}

// DefaultMaxSize is the largest publish request body by default: 1 MiB.
const DefaultMaxSize = 1 << 20

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
type Publish struct {
	// The hub to publish to. Default: "default".
	Hub string `json:"hub,omitempty"`

	// Topic templates, with placeholders; when set, they are the topics of
	// every event published through this route and the request's own are
	// ignored. A template whose result is empty, or whose placeholders are
	// unknown or empty, is dropped.
	Topics []string `json:"topics,omitempty"`

	// The largest request body, in bytes. Default: 1 MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// Origins allowed to publish from other sites, with credentials; "*"
	// allows any origin, without credentials.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	hub    *Hub
	cors   *corsPolicy
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*Publish) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_publish",
		New: func() caddy.Module { return new(Publish) },
	}
}

// Provision sets up the handler.
func (p *Publish) Provision(ctx caddy.Context) error {
	if p.Hub == "" {
		p.Hub = DefaultHubName
	}
	if p.MaxSize == 0 {
		p.MaxSize = DefaultMaxSize
	}
	if p.MaxSize < 0 {
		return fmt.Errorf("max_size must not be negative")
	}
	if err := validateOrigins(p.CORSOrigins); err != nil {
		return err
	}
	hub, err := lookupHub(ctx, p.Hub)
	if err != nil {
		return err
	}
	p.hub = hub
	p.cors = newCORSPolicy(p.CORSOrigins, "POST")
	p.logger = ctx.Logger()
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The sse_publish
// handler always responds; it never calls next.
func (p *Publish) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if !admit(p.cors, w, r, http.MethodPost, "publish") {
		return nil
	}
	var forced []string
	if len(p.Topics) > 0 {
		topics, err := expandTopics(r, p.Topics)
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
	if e := servePublish(w, r, p.hub, forced, p.MaxSize); e != nil {
		if e.status >= http.StatusInternalServerError {
			p.logger.Error("publish failed", zap.String("hub", p.Hub), zap.String("remote_addr", r.RemoteAddr),
				zap.Int("status", e.status), zap.Error(e.cause))
		}
		writeError(w, e.status, e.msg)
	}
	return nil
}

// servePublish decodes a publish request, publishes it to hub and answers
// it. forced, when set, replaces the topics the request names. A refusal
// or a failure is returned unanswered, for the caller to answer (and log,
// for a failure of the server).
//
// A request with an Idempotency-Key holds its key on this node from before
// its body is read until it is answered: a request with the same key is
// refused with 409 meanwhile. The transport answers a repetition with the
// first request's receipts (and publishes nothing), or refuses another
// request under the same key (422).
func servePublish(w http.ResponseWriter, r *http.Request, hub *Hub, forced []string, maxSize int64) *requestError {
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
	r.Body = http.MaxBytesReader(w, r.Body, maxSize)
	msgs, array, err := decodePublish(r, forced)
	if err != nil {
		return asRequestError(err)
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

// The refusals of a publish that its idempotency key decides.
var (
	errKeyInFlight = &requestError{status: http.StatusConflict,
		msg: "a request with this Idempotency-Key is still in progress; repeat it once that one is answered"}
	errKeyMismatch = &requestError{status: http.StatusUnprocessableEntity,
		msg: "this Idempotency-Key was used for another request (other events) in the last 24 hours; use a new key for a new request"}
)

// asRequestError returns err as a refusal; an error of unknown kind is a
// bad request.
func asRequestError(err error) *requestError {
	var re *requestError
	if errors.As(err, &re) {
		return re
	}
	return &requestError{status: http.StatusBadRequest, msg: err.Error()}
}

// publishError turns an error of Hub.Publish into the refusal it answers.
func publishError(err error) *requestError {
	switch {
	case errors.Is(err, transport.ErrKeyMismatch):
		return errKeyMismatch
	case errors.Is(err, transport.ErrKeyInFlight):
		return errKeyInFlight
	case errors.Is(err, context.Canceled):
		return &requestError{status: http.StatusBadRequest, msg: "the request was cancelled before its events were stored"}
	}
	return &requestError{status: http.StatusServiceUnavailable,
		msg: fmt.Sprintf("%v; try again later", err), cause: err}
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

// Interface guards
var (
	_ caddy.Provisioner           = (*Publish)(nil)
	_ caddyhttp.MiddlewareHandler = (*Publish)(nil)
)
