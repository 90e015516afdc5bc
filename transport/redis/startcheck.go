package redis

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// When a hub opens, a Redis that answers but refuses what the hub needs
// fails the config load, with the cause: a configuration error must not
// look like an outage (a hub unavailable forever). A Redis that does not
// answer does not fail it: the hub opens unavailable and serves once
// Redis is there.
//
// What is checked: the credentials and INFO (hello); that the server is
// what the addresses say (several addresses: a Cluster; a sentinel block:
// a master the sentinels know; one address: not a read-only replica);
// TLS on both sides (a TLS client against a plaintext server, and the
// converse); that the user may run the hub's scripts on its keys,
// publish on its channels, and subscribe to them.

// kindCheck is the control message a hub publishes when it opens, to
// check that it may publish on its channels; nodes ignore it.
const kindCheck = "check"

// startCheck checks the connection when the hub opens: nil if Redis is
// usable or does not answer (logged), the cause if it refuses.
func (t *Transport) startCheck(ctx context.Context) error {
	err := t.hello(ctx)
	if err == nil {
		return t.checkRights(ctx)
	}
	if cause := t.misconfigured(err); cause != nil {
		return cause
	}
	t.logger.Warn("redis is unreachable; the hub is unavailable until it answers",
		zap.String("address", t.address()), zap.Error(err))
	return nil
}

// misconfigured returns the configuration error that err, an error of
// the first command, reveals, or nil if Redis may just be down.
func (t *Transport) misconfigured(err error) error {
	addr := t.address()
	msg := err.Error()
	var rh tls.RecordHeaderError
	switch {
	case isAuthError(err):
		return fmt.Errorf("connecting to redis at %s as user %q: %w", addr, t.user(), err)
	case strings.HasPrefix(msg, "DENIED"):
		return fmt.Errorf("redis at %s refuses the connection: %w", addr, err)
	case strings.Contains(msg, "cluster support disabled"):
		return fmt.Errorf("redis at %s is not a Redis Cluster (%w): several addresses mean the nodes of a Cluster; "+
			"for one server give one address, for a server behind Sentinel use a sentinel block or a redis+sentinel:// url", addr, err)
	case t.opts.MasterName != "" && errors.Is(err, goredis.Nil):
		return fmt.Errorf("the sentinels at %s know no master named %q (%w)", addr, t.opts.MasterName, err)
	case t.opts.TLSConfig != nil && (errors.As(err, &rh) || strings.Contains(msg, "first record does not look like a TLS handshake")):
		return fmt.Errorf("TLS to redis at %s failed: the server does not speak TLS (%w); remove tls, or use redis:// instead of rediss://", addr, err)
	case isDialError(err) || t.opts.MasterName != "" || t.opts.Dialer != nil:
		return nil // nothing listens (or the sentinels are down): an outage
	}
	// The server accepted the connection but the exchange failed: a TLS
	// mismatch looks like a timeout or a closed connection. Ask it.
	ctx, cancel := context.WithTimeout(context.Background(), min(t.timeout, time.Second))
	defer cancel()
	for _, a := range t.opts.Addrs {
		if t.opts.TLSConfig != nil && answersPlain(ctx, a) {
			return fmt.Errorf("TLS to redis at %s failed (%w): the server answers without TLS; remove tls, or use redis:// instead of rediss://", a, err)
		}
		if t.opts.TLSConfig == nil && answersTLS(ctx, a) {
			return fmt.Errorf("redis at %s expects TLS (%w); add tls, or use rediss://", a, err)
		}
	}
	return nil
}

// checkRights checks that the user may run the hub's scripts and publish
// on its channels: Redis refuses with NOPERM otherwise.
func (t *Transport) checkRights(ctx context.Context) error {
	if _, err := t.state(ctx, "", 0, stateCheck); err != nil {
		if isPermError(err) {
			return fmt.Errorf("redis user %q at %s may not run the hub's Lua scripts on its keys: %w "+
				"(it needs +evalsha, +eval and the commands of the scripts, on the keys ~{%s:*)",
				t.user(), t.address(), err, t.Prefix)
		}
		if strings.Contains(err.Error(), "READONLY") && t.opts.MasterName == "" {
			return fmt.Errorf("redis at %s is a read-only replica (%w): name the primary, "+
				"or its sentinels with a sentinel block to follow failovers", t.address(), err)
		}
		return nil // not answering now: the reader goes on trying
	}
	err := t.sendControl(ctx, control{Kind: kindCheck})
	if err == nil {
		// the publish script publishes on B:a too; readers ignore an
		// empty message there
		err = t.publishOn(ctx, t.allChannel(), "")
	}
	if isPermError(err) {
		var re goredis.Error
		if errors.As(err, &re) {
			err = re // Redis's words, not "transport unavailable"
		}
		return fmt.Errorf("redis user %q at %s may not publish on the hub's channels: %w "+
			"(it needs +%s on the channels &{%s:*)", t.user(), t.address(), err, t.pubsubCommands(), t.Prefix)
	}
	return nil
}

// readerRefused returns the cause if the reader's first connection
// failed because Redis refused it (subscribing needs rights too).
func (t *Transport) readerRefused() error {
	up, lastErr, _, _, _ := t.rd.state()
	if up || !strings.Contains(lastErr, "NOPERM") {
		return nil
	}
	return fmt.Errorf("redis user %q at %s may not subscribe to the hub's channels: %s "+
		"(it needs +%s on the channels &{%s:*)", t.user(), t.address(), lastErr, t.pubsubCommands(), t.Prefix)
}

// pubsubCommands names the Pub/Sub commands the hub uses.
func (t *Transport) pubsubCommands() string {
	if t.sharded.Load() == 2 {
		return "publish, +subscribe, +unsubscribe"
	}
	return "spublish, +ssubscribe, +sunsubscribe"
}

// user names the Redis user in messages.
func (t *Transport) user() string {
	if t.opts.Username == "" {
		return "default"
	}
	return t.opts.Username
}

// isPermError reports whether err is Redis refusing a command, key or
// channel to the user.
func isPermError(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOPERM")
}

// isDialError reports whether err is a failure to connect at all.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// answersPlain reports whether a Redis answers PING without TLS at addr.
func answersPlain(ctx context.Context, addr string) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") || strings.HasPrefix(line, "-ERR"))
}

// answersTLS reports whether a server completes a TLS handshake at addr.
func answersTLS(ctx context.Context, addr string) bool {
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // only asks whether it speaks TLS
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// checkMaxmemory warns when Redis's maxmemory is below what the sizing
// rule asks for the hubs this node has on it (sizing.go): as far as the
// node knows, since other nodes and hubs may share the Redis. With
// noeviction, a full Redis refuses every publish.
func (t *Transport) checkMaxmemory(ctx context.Context) {
	res, err := t.client.ConfigGet(ctx, "maxmemory").Result()
	if err != nil {
		return
	}
	maxmemory, err := strconv.ParseInt(res["maxmemory"], 10, 64)
	if err != nil || maxmemory == 0 {
		return // no limit
	}
	need, hubs := t.shared.budget()
	if want := need + sizingSlack; maxmemory < want {
		t.logger.Warn("redis's maxmemory is below what this node's hubs on it may use "+
			"(2 x history_max_bytes + idempotency_max_bytes + 256 KiB per hub, and 4 MiB): "+
			"a full redis refuses publishes, or evicts history",
			zap.String("hub", t.hub), zap.String("address", t.address()),
			zap.Int64("maxmemory", maxmemory), zap.Int64("needed", want), zap.Int("hubs", hubs))
	}
}
