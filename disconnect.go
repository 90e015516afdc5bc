package caddysse

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/access"
	"github.com/ssehub/caddy-sse/transport"
)

// Disconnecting streams on an administrator's request (SPEC section 10):
// POST /sse/hubs/<name>/disconnect with {"topic": <pattern>} or
// {"subject": <value>} ends the matching streams of the hub, on every node
// through the transport, each with a disconnect event and a long retry
// hint. For a logout: revoke in the auth layer, then disconnect.

// Disconnect implements transport.Sink: it ends the local streams that
// follow a topic matching d.Topic, or whose subject is d.Subject, and
// returns how many it ended. A pattern stream (SPEC section 11) ends on a
// d.Topic that covers its pattern (access.Covers: every topic the stream
// can match, d.Topic matches) or equals it: a disconnect of "orders/**"
// ends the streams of "orders/*", one of "orders/42" does not end them,
// nor does one of "orders/*" end a stream of "**". A stream that merely
// overlaps d.Topic goes on; disconnect its subject to end it.
func (h *Hub) Disconnect(d transport.Disconnect) int {
	n := 0
	end := func(s *subscriber) {
		if s.finish(endRevoked) {
			n++
		}
	}
	h.mu.RLock()
	for name, ts := range h.topics {
		if d.Topic != "" && !access.Match(d.Topic, name) {
			continue
		}
		for _, s := range ts.subs {
			if d.Topic != "" || d.Subject != "" && s.subject == d.Subject {
				end(s)
			}
		}
	}
	for pattern, ts := range h.patternSubs {
		if d.Topic != "" && d.Topic != pattern && !access.Covers([]string{d.Topic}, pattern) {
			continue
		}
		for _, s := range ts.subs {
			if d.Topic != "" || d.Subject != "" && s.subject == d.Subject {
				end(s)
			}
		}
	}
	h.mu.RUnlock()
	if n > 0 {
		h.logger.Info("disconnected streams on request", zap.String("topic", d.Topic),
			zap.Bool("by_subject", d.Subject != ""), zap.Int("streams", n))
	}
	return n
}

// disconnectRequest is the body of POST /sse/hubs/<name>/disconnect.
type disconnectRequest struct {
	Topic   *string `json:"topic"`
	Subject *string `json:"subject"`
}

// maxDisconnectBody bounds the body of a disconnect request.
const maxDisconnectBody = 64 << 10

// serveDisconnect ends the streams of a hub that match the request, on
// every node, and answers {"disconnected": <this node's count>}.
func serveDisconnect(w http.ResponseWriter, r *http.Request, name string) error {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return nil
	}
	hub, ok := findRunningHub(w, name)
	if !ok {
		return nil
	}
	d, err := readDisconnect(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	n, err := hub.transport.Disconnect(r.Context(), d)
	if err != nil {
		hub.logger.Error("could not ask the other nodes to disconnect streams", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable,
			fmt.Sprintf("%d streams of this node were disconnected, but the other nodes could not be told: %v", n, err))
		return nil
	}
	writeJSONBytes(w, http.StatusOK, fmt.Appendf(nil, "{\"disconnected\":%d}\n", n))
	return nil
}

// readDisconnect reads and checks a disconnect request: a JSON object with
// exactly one of topic (a valid topic pattern) and subject (not empty).
func readDisconnect(r *http.Request) (transport.Disconnect, error) {
	var req disconnectRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxDisconnectBody+1))
	if err != nil {
		return transport.Disconnect{}, fmt.Errorf("reading the request: %w", err)
	}
	if len(body) > maxDisconnectBody {
		return transport.Disconnect{}, fmt.Errorf("the request is larger than %d bytes", maxDisconnectBody)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return transport.Disconnect{}, fmt.Errorf(`the body must be a JSON object {"topic": "<pattern>"} or {"subject": "<value>"}: %v`, err)
	}
	switch {
	case req.Topic != nil && req.Subject != nil:
		return transport.Disconnect{}, fmt.Errorf("give topic or subject, not both")
	case req.Topic != nil:
		if err := validateTopic(*req.Topic); err != nil { // any topic is a pattern
			return transport.Disconnect{}, fmt.Errorf("topic: %w", err)
		}
		return transport.Disconnect{Topic: *req.Topic}, nil
	case req.Subject != nil:
		if *req.Subject == "" {
			return transport.Disconnect{}, fmt.Errorf("subject is empty")
		}
		return transport.Disconnect{Subject: *req.Subject}, nil
	}
	return transport.Disconnect{}, fmt.Errorf(`the body must be a JSON object {"topic": "<pattern>"} or {"subject": "<value>"}`)
}
