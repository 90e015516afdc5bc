package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// Presence (transport.PresenceTransport): the distinct members of each
// topic of the hub, counted across its nodes. Keys, all under the hub's
// hash tag B = {<prefix>:<hub>}, so in its Cluster slot:
//
//	B:pm:<topic>  hash: member → the number of nodes that have it there
//	B:pn:<node>   set of "<topic>\n<member>": what a node has joined
//	B:pnodes      sorted set: node → its deadline (ms, Redis's clock)
//	B:pv          the version of the hub's presence: one INCR per change
//
// A node's Join and Leave are queued and applied in order, in batches, by
// one script call each (applyScript), which counts the node in and out
// of the member's hash field and, on a change (a member's first node, or
// its last one gone), increments B:pv and publishes the change on the
// hub's control channel (control.go), which every node's reader hands to
// its sink: {"kind":"presence","node":...,"presence":{"topic":...,
// "member":...,"join":true,"version":n}}. Presence reads a topic's hash
// and B:pv in one script: the seam with the changes that follow.
//
// Every presenceBeat, a node that has members renews its deadline
// (presenceNodeTTL ahead), and every node reaps the nodes whose deadline
// passed (a crash, a kill, a partition: they did not leave): their
// members leave, with their changes published, as if their streams had
// ended. A node whose own entry was reaped (it was unreachable for longer
// than presenceNodeTTL), or whose commands failed, sets its entries in
// Redis right again from what it knows (reconcile). A node that closes
// takes its members out at once (the hub's grace has passed by then, or
// the hub is going away).
//
// Every presence key expires presenceKeyTTL after it was last written;
// the beats renew those of the running nodes, and a topic's hash is
// renewed by every node that has members there every presenceKeyTTL / 4.
// What a hub's presence costs Redis: about 100 bytes per (topic, member)
// in B:pm (plus about 200 per topic), as much again per node that has it
// in B:pn:<node>, and a few hundred bytes for B:pnodes and B:pv.

// Timing of presence.
const (
	// presenceBeat is how often a node renews its deadline and reaps
	// the dead nodes.
	presenceBeat = 5 * time.Second
	// presenceNodeTTL is how long after its last beat a node is dead:
	// its members leave then (within a beat of another node).
	presenceNodeTTL = 20 * time.Second
	// presenceKeyTTL is the expiry of the presence keys, renewed while
	// they are used.
	presenceKeyTTL = 7 * 24 * time.Hour
	// presenceBatch is the most Joins and Leaves applied by one script.
	presenceBatch = 500
)

// kindPresence is the kind of a control message that carries a presence
// change.
const kindPresence = "presence"

// presence is a transport's part of the hub's presence.
type presence struct {
	beat    time.Duration // presenceBeat; tests set less
	nodeTTL time.Duration // presenceNodeTTL; tests set less

	mu         sync.Mutex
	held       map[string]struct{} // this node's entries, "<topic>\n<member>", as queued
	queue      []presenceOp
	dirty      bool      // Redis may not have what held says: reconcile at the next beat
	registered bool      // the node was listed in B:pnodes when it last looked
	renewed    time.Time // when the topics' hashes were last renewed
	signal     chan struct{}
	disabled   bool // Redis refused the scripts; presence is off (logged)
}

// presenceOp is a queued Join or Leave.
type presenceOp struct {
	join          bool
	topic, member string
}

// presenceEntry is the member in B:pn:<node> of member on topic.
func presenceEntry(topic, member string) string { return topic + "\n" + member }

// initPresence prepares the transport's presence; Open calls it.
func (t *Transport) initPresence() {
	p := &t.pres
	if p.beat <= 0 {
		p.beat = presenceBeat
	}
	if p.nodeTTL <= 0 {
		p.nodeTTL = presenceNodeTTL
	}
	p.held = make(map[string]struct{})
	p.signal = make(chan struct{}, 1)
	p.renewed = time.Now()
}

// Join implements transport.PresenceTransport.
func (t *Transport) Join(topic, member string) {
	t.queuePresence(presenceOp{join: true, topic: topic, member: member})
}

// Leave implements transport.PresenceTransport.
func (t *Transport) Leave(topic, member string) {
	t.queuePresence(presenceOp{topic: topic, member: member})
}

// queuePresence queues op for the presence worker, and records it in what
// the node holds.
func (t *Transport) queuePresence(op presenceOp) {
	p := &t.pres
	p.mu.Lock()
	if t.closed.Load() {
		p.mu.Unlock()
		return
	}
	e := presenceEntry(op.topic, op.member)
	if op.join {
		p.held[e] = struct{}{}
	} else {
		delete(p.held, e)
	}
	p.queue = append(p.queue, op)
	p.mu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// presenceWorker applies the queued Joins and Leaves, and beats, until
// the transport closes; then it takes the node's members out.
func (t *Transport) presenceWorker() {
	defer t.wg.Done()
	p := &t.pres
	tick := time.NewTicker(p.beat) // the first beat a beat after Open, which it does not slow down
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			t.dropPresence()
			return
		case <-p.signal:
			t.flushPresence()
		case <-tick.C:
			t.flushPresence()
			t.presenceBeat()
		}
	}
}

// flushPresence applies the queued operations, in order, in batches. A
// batch that fails is lost: the node reconciles at its next beat.
func (t *Transport) flushPresence() {
	p := &t.pres
	p.mu.Lock()
	ops := p.queue
	p.queue = nil
	p.mu.Unlock()
	for len(ops) > 0 {
		n := min(len(ops), presenceBatch)
		if err := t.applyPresence(ops[:n]); err != nil {
			t.presenceFailed("applying joins and leaves", err)
		}
		ops = ops[n:]
	}
}

// presenceFailed logs err and has the node reconcile at its next beat.
func (t *Transport) presenceFailed(what string, err error) {
	p := &t.pres
	p.mu.Lock()
	p.dirty = true
	p.mu.Unlock()
	switch {
	case t.ctx.Err() != nil:
	case isPermError(err): // a configuration to fix: say it loudly
		t.logger.Warn("presence: redis refuses "+what+": the user needs the commands of the presence scripts on the hub's keys",
			zap.String("hub", t.hub), zap.Error(err))
	default:
		t.logger.Debug("presence: "+what, zap.String("hub", t.hub), zap.Error(err))
	}
}

// applyPresence runs ops in one script call.
func (t *Transport) applyPresence(ops []presenceOp) error {
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	cmd, err := t.publishCommand(ctx)
	if err != nil {
		return err
	}
	args := make([]any, 0, 6+3*len(ops))
	args = append(args, t.base, t.node, cmd, t.controlChannel(), presenceKeyTTL.Milliseconds(), t.pres.nodeTTL.Milliseconds())
	for _, op := range ops {
		j := "0"
		if op.join {
			j = "1"
		}
		args = append(args, j, op.topic, op.member)
	}
	added, err := applyScript.Run(ctx, t.client, t.presenceKeys(), args...).Int64()
	if err != nil {
		return redisError(err)
	}
	t.listed(added == 1)
	return nil
}

// listed takes a script's word that it listed the node (added) or found
// it listed: a node that had been listed and was not any more was reaped
// as dead, and its entries are gone: it reconciles at its next beat.
func (t *Transport) listed(added bool) {
	p := &t.pres
	p.mu.Lock()
	defer p.mu.Unlock()
	if added && p.registered {
		p.dirty = true
	}
	p.registered = true
}

// presenceKeys are the declared keys of the presence scripts: the one
// that places them in the hub's slot.
func (t *Transport) presenceKeys() []string { return []string{t.base + ":pnodes"} }

// presenceBeat renews the node's deadline (while it has members), reaps
// the dead nodes, renews the topics' expiry when due, and reconciles the
// node's entries when they may be wrong.
func (t *Transport) presenceBeat() {
	p := &t.pres
	p.mu.Lock()
	has := len(p.held) > 0
	renew := has && time.Since(p.renewed) >= presenceKeyTTL/4
	p.mu.Unlock()
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	cmd, err := t.publishCommand(ctx)
	if err != nil {
		t.presenceFailed("beating", err)
		return
	}
	mode := "idle"
	if has {
		mode = "beat"
	}
	added, err := beatScript.Run(ctx, t.client, t.presenceKeys(), t.base, t.node, cmd, t.controlChannel(),
		p.nodeTTL.Milliseconds(), presenceKeyTTL.Milliseconds(), mode).Int64()
	if err != nil {
		t.presenceFailed("beating", redisError(err))
		return
	}
	if has {
		t.listed(added == 1)
	} else {
		p.mu.Lock()
		p.registered = false
		p.mu.Unlock()
	}
	p.mu.Lock()
	reconcile := p.dirty
	p.dirty = false
	p.mu.Unlock()
	if reconcile {
		t.reconcilePresence(ctx)
	}
	if renew {
		t.renewPresence(ctx)
	}
}

// reconcilePresence makes the node's entries in Redis what it holds: it
// joins what Redis lacks and leaves what Redis has in excess. It runs on
// the worker, so no queued operation overtakes it.
func (t *Transport) reconcilePresence(ctx context.Context) {
	p := &t.pres
	inRedis, err := t.client.SMembers(ctx, t.base+":pn:"+t.node).Result()
	if err != nil {
		t.presenceFailed("reading the node's members", err)
		return
	}
	p.mu.Lock()
	want := make(map[string]struct{}, len(p.held))
	for e := range p.held {
		want[e] = struct{}{}
	}
	p.mu.Unlock()
	var ops []presenceOp
	for _, e := range inRedis {
		if _, ok := want[e]; ok {
			delete(want, e)
			continue
		}
		topic, member, _ := strings.Cut(e, "\n")
		ops = append(ops, presenceOp{topic: topic, member: member})
	}
	for e := range want {
		topic, member, _ := strings.Cut(e, "\n")
		ops = append(ops, presenceOp{join: true, topic: topic, member: member})
	}
	if len(ops) == 0 {
		return
	}
	t.logger.Info("presence: set this node's members in redis right again", zap.String("hub", t.hub), zap.Int("changes", len(ops)))
	p.mu.Lock()
	p.queue = append(ops, p.queue...)
	p.mu.Unlock()
	t.flushPresence()
}

// renewPresence renews the expiry of the hashes of the node's topics.
func (t *Transport) renewPresence(ctx context.Context) {
	p := &t.pres
	p.mu.Lock()
	topics := make(map[string]struct{})
	for e := range p.held {
		topic, _, _ := strings.Cut(e, "\n")
		topics[topic] = struct{}{}
	}
	p.renewed = time.Now()
	p.mu.Unlock()
	_, err := t.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for topic := range topics {
			pipe.PExpire(ctx, t.base+":pm:"+topic, presenceKeyTTL)
		}
		return nil
	})
	if err != nil {
		t.presenceFailed("renewing the topics' expiry", err)
	}
}

// dropPresence takes the node's members out of Redis as the transport
// closes: their leaves are published at once.
func (t *Transport) dropPresence() {
	p := &t.pres
	p.mu.Lock()
	had := len(p.held) > 0 || len(p.queue) > 0 || p.registered
	p.held, p.queue = nil, nil
	p.mu.Unlock()
	if !had {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	cmd, err := t.publishCommand(ctx)
	if err == nil {
		err = beatScript.Run(ctx, t.client, t.presenceKeys(), t.base, t.node, cmd, t.controlChannel(),
			p.nodeTTL.Milliseconds(), presenceKeyTTL.Milliseconds(), "drop").Err()
	}
	if err != nil {
		t.logger.Warn("presence: could not take this node's members out of redis; the other nodes will once it expires",
			zap.String("hub", t.hub), zap.Duration("after", p.nodeTTL), zap.Error(err))
	}
}

// Presence implements transport.PresenceTransport.
func (t *Transport) Presence(ctx context.Context, topic string, max int) (transport.PresenceSnapshot, error) {
	if t.closed.Load() {
		return transport.PresenceSnapshot{}, transport.ErrClosed
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	res, err := snapshotScript.Run(ctx, t.client, t.presenceKeys(), t.base, topic, max).Slice()
	if err != nil {
		return transport.PresenceSnapshot{}, redisError(err)
	}
	if len(res) != 3 {
		return transport.PresenceSnapshot{}, fmt.Errorf("redis script: a presence snapshot of %d values", len(res))
	}
	v, _ := res[0].(int64)
	n, _ := res[1].(int64)
	snap := transport.PresenceSnapshot{Version: uint64(v), Count: int(n)}
	list, _ := res[2].([]any)
	for _, m := range list {
		if s, ok := m.(string); ok {
			snap.Members = append(snap.Members, s)
		}
	}
	return snap, nil
}

// PresenceCounts implements transport.PresenceTransport.
func (t *Transport) PresenceCounts(ctx context.Context, topics []string) ([]int, error) {
	if t.closed.Load() {
		return nil, transport.ErrClosed
	}
	ctx, cancel := t.withTimeout(ctx)
	defer cancel()
	cmds := make([]*goredis.IntCmd, len(topics))
	_, err := t.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i, topic := range topics {
			cmds[i] = pipe.HLen(ctx, t.base+":pm:"+topic)
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	counts := make([]int, len(topics))
	for i, c := range cmds {
		counts[i] = int(c.Val())
	}
	return counts, nil
}

// presenceChanged hands a change of the control channel to the sink, from
// the reader goroutine (as events are).
func (t *Transport) presenceChanged(payload json.RawMessage) {
	ps, ok := t.sink.(transport.PresenceSink)
	if !ok {
		return
	}
	var c transport.PresenceChange
	if err := json.Unmarshal(payload, &c); err != nil || c.Version == 0 {
		t.logger.Error("ignoring a malformed presence change", zap.String("hub", t.hub), zap.Error(err))
		return
	}
	t.sinkMu.RLock()
	defer t.sinkMu.RUnlock()
	if !t.closed.Load() {
		ps.PresenceChanged(c)
	}
}

// presenceMissed tells the sink that presence changes may have been missed
// (the reader got back in sync after a lost connection or dropped
// messages, which the control channel's changes are not read back from).
func (t *Transport) presenceMissed() {
	ps, ok := t.sink.(transport.PresenceResyncSink)
	if !ok {
		return
	}
	t.sinkMu.RLock()
	defer t.sinkMu.RUnlock()
	if !t.closed.Load() {
		ps.PresenceMissed()
	}
}

// presenceLib holds what the presence scripts share. ARGV[1] is the hub's
// base B; change publishes a change on the control channel.
const presenceLib = `
local B = ARGV[1]
local function now_ms()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function change(cmd, channel, keyttl, node, topic, member, join)
	local v = redis.call('INCR', B .. ':pv')
	redis.call('PEXPIRE', B .. ':pv', keyttl)
	redis.call(cmd, channel, cjson.encode({kind = 'presence', node = node,
		presence = {topic = topic, member = member, join = join, version = v}}))
end
-- out takes node out of member's field on topic; the last node out is a leave
local function out(cmd, channel, keyttl, node, topic, member)
	local hk = B .. ':pm:' .. topic
	local n = redis.call('HINCRBY', hk, member, -1)
	if n > 0 then return end
	redis.call('HDEL', hk, member)
	change(cmd, channel, keyttl, node, topic, member, false)
end
-- drop takes every entry of node out, and the node
local function drop(cmd, channel, keyttl, node)
	local nk = B .. ':pn:' .. node
	for _, e in ipairs(redis.call('SMEMBERS', nk)) do
		local i = string.find(e, '\n', 1, true)
		out(cmd, channel, keyttl, node, string.sub(e, 1, i - 1), string.sub(e, i + 1))
	end
	redis.call('DEL', nk)
	redis.call('ZREM', KEYS[1], node)
end
`

// applyScript applies a node's Joins and Leaves in order.
// A node with entries is listed (with a deadline a node TTL ahead) if it
// was not: the script returns 1 then, else 0. ARGV: B, node, publish
// command, control channel, key TTL (ms), node TTL (ms), then triples: "1" (join) or "0" (leave), topic, member.
var applyScript = goredis.NewScript(presenceLib + `
local node, cmd, channel, keyttl, nodettl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local nk = B .. ':pn:' .. node
for i = 7, #ARGV, 3 do
	local join, topic, member = ARGV[i] == '1', ARGV[i + 1], ARGV[i + 2]
	local e = topic .. '\n' .. member
	if join then
		if redis.call('SADD', nk, e) == 1 then
			local hk = B .. ':pm:' .. topic
			local n = redis.call('HINCRBY', hk, member, 1)
			redis.call('PEXPIRE', hk, keyttl)
			if n == 1 then change(cmd, channel, keyttl, node, topic, member, true) end
		end
	elseif redis.call('SREM', nk, e) == 1 then
		out(cmd, channel, keyttl, node, topic, member)
	end
end
if redis.call('SCARD', nk) == 0 then return 0 end
redis.call('PEXPIRE', nk, keyttl)
local added = redis.call('ZADD', KEYS[1], 'NX', now_ms() + nodettl, node)
redis.call('PEXPIRE', KEYS[1], keyttl)
return added
`)

// beatScript renews a node's deadline (mode "beat"), or takes it out
// when it has no members ("idle") or closes ("drop"), and reaps up to ten
// dead nodes. It returns 1 when a beating node was not listed (it is new,
// or was reaped as dead: it must set its entries again), else 0.
// ARGV: B, node, publish command, control channel, node TTL (ms), key
// TTL (ms), mode.
var beatScript = goredis.NewScript(presenceLib + `
local node, cmd, channel = ARGV[2], ARGV[3], ARGV[4]
local nodettl, keyttl, mode = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local now = now_ms()
local added = 0
if mode == 'beat' then
	added = redis.call('ZADD', KEYS[1], now + nodettl, node)
	redis.call('PEXPIRE', KEYS[1], keyttl)
	redis.call('PEXPIRE', B .. ':pn:' .. node, keyttl)
elseif mode == 'drop' or redis.call('ZSCORE', KEYS[1], node) then
	drop(cmd, channel, keyttl, node)
end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 10)) do
	drop(cmd, channel, keyttl, dead)
end
return added
`)

// snapshotScript reads a topic's members and the presence's version.
// ARGV: B, topic, the most members to list. It returns {version, count,
// members (sorted, at most the most)}.
var snapshotScript = goredis.NewScript(presenceLib + `
local hk = B .. ':pm:' .. ARGV[2]
local max = tonumber(ARGV[3])
local v = tonumber(redis.call('GET', B .. ':pv') or '0')
local n = redis.call('HLEN', hk)
local list = {}
if max > 0 and n > 0 then
	local all = redis.call('HKEYS', hk)
	table.sort(all)
	for i = 1, math.min(max, #all) do list[i] = all[i] end
end
return {v, n, list}
`)

// Interface guards
var _ transport.PresenceTransport = (*Transport)(nil)
