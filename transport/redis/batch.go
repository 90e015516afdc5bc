package redis

import (
	"context"
	"fmt"
	"slices"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// The bounds of a batch: one script call carries at most batchMessages
// messages, to at most batchTopics topics counted per message, of at most
// batchBytes (bodies and topic names) together, so that it holds Redis,
// which runs one script at a time, for well under a millisecond (64
// events of 3 topics: about 0.8 ms on a loaded 2-CPU machine); a publish
// larger than that goes alone. One pipeline carries at most
// pipelineScripts script calls.
const (
	batchMessages   = 64
	batchTopics     = 192
	batchBytes      = 128 << 10
	pipelineScripts = 4
)

// batcher sends concurrent publishes to Redis together: one of them (the
// sender) takes every publish waiting at that moment, sends them as one
// publish script call (several, in one pipeline, beyond a batch's
// bounds), in the order they came, and reads the answers; the publishes
// that come meanwhile wait for the next round, which the first of them
// sends. Nobody waits for a batch to fill: a lone publish is sent at
// once. A script call does once for all its publishes what does not
// depend on a publish (see publishScript), and one round trip serves
// them all; each publish gets its own answer, and a publish refused
// (idempotency key mismatch, rights) does not fail its neighbours. Each
// script is sent once.
type batcher struct {
	mu      sync.Mutex
	queue   []*pubCall
	sending bool // a sender is at work; it hands over when done
}

// pubCall is one publish, waiting to be sent in a batch.
type pubCall struct {
	ctx     context.Context
	cmd     string // the publish command: calls with different ones go in different scripts
	args    []any  // the call's part of the script's arguments (see publishScript)
	nmsg    int    // its messages
	ntopics int    // their topics, counted per message
	bytes   int    // their bodies' and topic names' bytes

	// the answer
	err     error
	sent    bool     // the script was sent to Redis: it may have run even if err is set
	status  string   // "ok", "mismatch" or "noperm", when err is nil
	epoch   string   // "ok": the hub's epoch
	answers []string // "ok": a receipt per message (see publishScript)
	refused string   // "noperm": the command the user may not run

	done   chan struct{} // closed when the answer is set
	lead   chan struct{} // signalled when this call's publisher is to send
	leader bool          // lead was signalled (guarded by batcher.mu)
}

// publish sends c in a batch with the concurrent publishes, and returns
// once it is answered.
func (t *Transport) publish(c *pubCall) {
	b := &t.batch
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if !b.sending {
		b.sending = true
		b.mu.Unlock()
		t.sendBatch()
		<-c.done
		return
	}
	b.mu.Unlock()
	select {
	case <-c.done:
	case <-c.lead:
		t.sendBatch()
		<-c.done
	case <-c.ctx.Done():
		b.mu.Lock()
		if i := slices.Index(b.queue, c); i >= 0 && !c.leader {
			b.queue = slices.Delete(b.queue, i, i+1) // never sent: not published
			b.mu.Unlock()
			c.err = c.ctx.Err()
			return
		}
		leader := c.leader
		b.mu.Unlock()
		if leader {
			t.sendBatch()
		}
		<-c.done
	}
}

// sendBatch sends the waiting publishes, then hands the sending over to
// the first publish that came meanwhile, if any.
func (t *Transport) sendBatch() {
	b := &t.batch
	b.mu.Lock()
	groups, n := splitBatch(b.queue)
	b.queue = slices.Delete(b.queue, 0, n)
	b.mu.Unlock()

	t.runBatches(groups)

	b.mu.Lock()
	if len(b.queue) > 0 {
		next := b.queue[0]
		next.leader = true
		next.lead <- struct{}{}
	} else {
		b.sending = false
	}
	b.mu.Unlock()
}

// splitBatch splits the first calls of queue into the script calls of a
// pipeline (at most pipelineScripts), each within a batch's bounds, and
// returns them and how many calls they take.
func splitBatch(queue []*pubCall) (groups [][]*pubCall, n int) {
	var cur []*pubCall
	msgs, topics, bytes := 0, 0, 0
	for _, c := range queue {
		full := len(cur) > 0 && (msgs+c.nmsg > batchMessages || topics+c.ntopics > batchTopics ||
			bytes+c.bytes > batchBytes || c.cmd != cur[0].cmd)
		if full {
			groups = append(groups, cur)
			if len(groups) == pipelineScripts {
				return groups, n
			}
			cur, msgs, topics, bytes = nil, 0, 0, 0
		}
		cur = append(cur, c)
		msgs, topics, bytes = msgs+c.nmsg, topics+c.ntopics, bytes+c.bytes
		n++
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	return groups, n
}

// runBatches runs one publish script per group, in one pipeline, and
// hands each call its answer.
func (t *Transport) runBatches(groups [][]*pubCall) {
	live := make([][]*pubCall, 0, len(groups))
	for _, g := range groups {
		var sent []*pubCall
		for _, c := range g {
			if err := c.ctx.Err(); err != nil {
				c.err = err // never sent: not published
				close(c.done)
				continue
			}
			c.sent = true
			sent = append(sent, c)
		}
		if len(sent) > 0 {
			live = append(live, sent)
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	cand := t.candidate()
	head := t.batchHead(live[0][0].cmd, cand)
	if len(live) == 1 {
		res, err := publishScript.Run(ctx, t.client, t.keys, batchArgs(head, live[0])...).StringSlice()
		t.settle(live[0], cand, res, err)
		return
	}
	pipe := t.client.Pipeline()
	cmds := make([]*goredis.Cmd, len(live))
	for i, g := range live {
		head[1] = g[0].cmd
		cmds[i] = publishScript.EvalSha(ctx, pipe, t.keys, batchArgs(head, g)...)
	}
	_, _ = pipe.Exec(ctx)
	for i, g := range live {
		cmd := cmds[i]
		if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// Redis lost its scripts (a restart): this one did not run, nor
			// did those after it; each is sent again, in order.
			head[1] = g[0].cmd
			cmd = publishScript.Eval(ctx, t.client, t.keys, batchArgs(head, g)...)
		}
		res, err := cmd.StringSlice()
		t.settle(g, cand, res, err)
	}
}

// batchHead returns the arguments a batch's script call begins with, up
// to the number of calls (see publishScript): the limits and the floor
// are read when the batch is sent.
func (t *Transport) batchHead(cmd, cand string) []any {
	lim := t.limits.Load()
	floorEpoch, floorSeq := t.rd.position()
	return []any{t.base, cmd, cand, lim.Events, lim.TTL.Milliseconds(), lim.MaxBytes,
		lim.IdempotencyBudget(), floorEpoch, floorSeq}
}

// batchArgs returns the script's arguments for the calls of a batch.
func batchArgs(head []any, calls []*pubCall) []any {
	n := len(head) + 1
	for _, c := range calls {
		n += len(c.args)
	}
	args := make([]any, 0, n)
	args = append(args, head...)
	args = append(args, len(calls))
	for _, c := range calls {
		args = append(args, c.args...)
	}
	return args
}

// settle hands the calls of a batch their answers from the script's
// reply res (see publishScript), or its error.
func (t *Transport) settle(calls []*pubCall, cand string, res []string, err error) {
	if err == nil {
		err = parseBatch(calls, res)
	}
	if err == nil {
		t.used(cand, calls[0].epoch)
	}
	for _, c := range calls {
		if err != nil {
			c.err = err
		}
		close(c.done)
	}
}

// parseBatch sets the calls' answers from the script's reply.
func parseBatch(calls []*pubCall, res []string) error {
	if len(res) == 2 && res[0] == "noperm" {
		for _, c := range calls {
			c.status, c.refused = "noperm", res[1]
		}
		return nil
	}
	if len(res) < 2 || res[0] != "ok" {
		return fmt.Errorf("unexpected answer from redis: %q", res)
	}
	epoch, rest := res[1], res[2:]
	for _, c := range calls {
		if len(rest) == 0 {
			return fmt.Errorf("unexpected answer from redis: %q", res)
		}
		c.status, c.epoch, rest = rest[0], epoch, rest[1:]
		switch c.status {
		case "ok":
			if len(rest) < c.nmsg {
				return fmt.Errorf("unexpected answer from redis: %q", res)
			}
			c.answers, rest = rest[:c.nmsg:c.nmsg], rest[c.nmsg:]
		case "noperm":
			if len(rest) == 0 {
				return fmt.Errorf("unexpected answer from redis: %q", res)
			}
			c.refused, rest = rest[0], rest[1:]
		case "mismatch":
		default:
			return fmt.Errorf("unexpected answer from redis: %q", res)
		}
	}
	if len(rest) != 0 {
		return fmt.Errorf("unexpected answer from redis: %q", res)
	}
	return nil
}
