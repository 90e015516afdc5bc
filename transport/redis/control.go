package redis

import (
	"context"
	"encoding/json"
	"fmt"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// The hub's control channel, B:ctl, carries what the nodes of a hub tell
// one another besides events. Every node's reader subscribes to it, on
// the Pub/Sub connection of its topics' channels (pubsub.go; sharded like
// them when Redis has sharded Pub/Sub). A message is a JSON object:
//
//	{"kind":"disconnect","node":"<id>","disconnect":{"topic":"...","subject":"..."}}
//
// kind says what the message asks, and which of the other fields it has;
// node is the id of the transport that sent it (Transport.node), so that
// a node does not act twice on what it did itself before sending. A node
// ignores a kind it does not know, which a newer version may send.

// Kinds of control messages.
const (
	// kindDisconnect asks the other nodes to end the streams that match
	// the message's disconnect (see transport.Disconnect).
	kindDisconnect = "disconnect"
)

// control is a message of the control channel.
type control struct {
	Kind       string                `json:"kind"`
	Node       string                `json:"node"`
	Disconnect *transport.Disconnect `json:"disconnect,omitempty"`
	// Presence is a presence change, which every node takes, the sender
	// included (presence.go).
	Presence json.RawMessage `json:"presence,omitempty"`
}

// controlChannel is the Pub/Sub channel of the hub's control messages.
func (t *Transport) controlChannel() string {
	return t.base + ":ctl"
}

// Disconnect implements transport.Transport: the local sink ends this
// node's streams, then the request is published on the control channel,
// whence the reader of every other node connected to Redis hands it to
// its own sink. An error tells that Redis did not take the request; this
// node's streams have been ended all the same.
func (t *Transport) Disconnect(ctx context.Context, d transport.Disconnect) (int, error) {
	n, ok := t.disconnectLocal(d)
	if !ok {
		return 0, transport.ErrClosed
	}
	if err := t.sendControl(ctx, control{Kind: kindDisconnect, Disconnect: &d}); err != nil {
		return n, fmt.Errorf("telling the other nodes to disconnect: %w", err)
	}
	return n, nil
}

// disconnectLocal hands d to the sink, unless the transport is closed.
// It holds sinkMu for reading, so that Close, which takes it, never
// returns while the sink is being called.
func (t *Transport) disconnectLocal(d transport.Disconnect) (int, bool) {
	t.sinkMu.RLock()
	defer t.sinkMu.RUnlock()
	if t.closed.Load() {
		return 0, false
	}
	return t.sink.Disconnect(d), true
}

// sendControl publishes c, from this node, on the control channel, with
// the command the scripts publish with, within the transport's timeout.
func (t *Transport) sendControl(ctx context.Context, c control) error {
	c.Node = t.node
	payload, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding a %s message: %w", c.Kind, err)
	}
	return t.publishOn(ctx, t.controlChannel(), string(payload))
}

// publishOn publishes payload on channel, with the command the scripts
// publish with, within the transport's timeout.
func (t *Transport) publishOn(ctx context.Context, channel, payload string) error {
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	cmd, err := t.publishCommand(ctx)
	if err != nil {
		return err
	}
	var res *goredis.IntCmd
	if cmd == "SPUBLISH" {
		res = t.client.SPublish(ctx, channel, payload)
	} else {
		res = t.client.Publish(ctx, channel, payload)
	}
	return unavailable(res.Err())
}

// control acts on a message of the control channel, from the reader
// goroutine, as it does on events. It ignores what this node sent.
func (r *reader) control(payload string) {
	var c control
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		r.t.logger.Error("ignoring a malformed control message", zap.String("hub", r.t.hub), zap.Error(err))
		return
	}
	if c.Kind == kindPresence {
		r.t.presenceChanged(c.Presence)
		return
	}
	if c.Node == r.t.node {
		return
	}
	switch {
	case c.Kind == kindDisconnect && c.Disconnect != nil:
		n := r.t.sink.Disconnect(*c.Disconnect)
		r.t.logger.Debug("disconnect requested by another node",
			zap.String("hub", r.t.hub), zap.String("node", c.Node),
			zap.String("topic", c.Disconnect.Topic), zap.String("subject", c.Disconnect.Subject),
			zap.Int("streams", n))
	default:
		r.t.logger.Debug("ignoring a control message of an unknown kind",
			zap.String("hub", r.t.hub), zap.String("kind", c.Kind), zap.String("node", c.Node))
	}
}
