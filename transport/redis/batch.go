package redis

import (
	"context"
	"slices"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// maxBatch bounds the publishes sent to Redis in one pipeline.
const maxBatch = 64

// batcher sends concurrent publishes to Redis together: one of them (the
// sender) writes every publish waiting at that moment in one pipeline, in
// the order they came, and reads the answers; the publishes that come
// meanwhile wait for the next pipeline, which the first of them sends.
// Nobody waits for a batch to fill: a lone publish is sent at once. This
// saves a write and a read system call per publish, on both sides, when
// publishers are concurrent. The scripts run in Redis in the order of the
// pipeline; each is sent once.
type batcher struct {
	mu      sync.Mutex
	queue   []*pubCall
	sending bool // a sender is at work; it hands over when done
}

// pubCall is one publish script call.
type pubCall struct {
	ctx    context.Context
	args   []any
	res    []string
	err    error
	sent   bool          // the script was sent to Redis: it may have run even if err is set
	done   chan struct{} // closed when res and err are set
	lead   chan struct{} // signalled when this call's publisher is to send
	leader bool          // lead was signalled (guarded by batcher.mu)
}

// publish runs the publish script with args, in a pipeline with the
// concurrent publishes. sent tells that the script was sent to Redis: an
// error then does not mean that it did not run.
func (t *Transport) publish(ctx context.Context, args []any) (res []string, sent bool, err error) {
	c := &pubCall{ctx: ctx, args: args, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	b := &t.batch
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if !b.sending {
		b.sending = true
		b.mu.Unlock()
		t.sendBatch()
		<-c.done
		return c.res, c.sent, c.err
	}
	b.mu.Unlock()
	select {
	case <-c.done:
	case <-c.lead:
		t.sendBatch()
		<-c.done
	case <-ctx.Done():
		b.mu.Lock()
		if i := slices.Index(b.queue, c); i >= 0 && !c.leader {
			b.queue = slices.Delete(b.queue, i, i+1) // never sent: not published
			b.mu.Unlock()
			return nil, false, ctx.Err()
		}
		leader := c.leader
		b.mu.Unlock()
		if leader {
			t.sendBatch()
		}
		<-c.done
	}
	return c.res, c.sent, c.err
}

// sendBatch sends the waiting publishes, then hands the sending over to
// the first publish that came meanwhile, if any.
func (t *Transport) sendBatch() {
	b := &t.batch
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	calls := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	b.mu.Unlock()

	t.runCalls(calls)

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

// runCalls runs the publish scripts of calls in one pipeline.
func (t *Transport) runCalls(calls []*pubCall) {
	live := calls[:0:0]
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.err = err // never sent: not published
			close(c.done)
			continue
		}
		c.sent = true
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	if len(live) == 1 {
		c := live[0]
		c.res, c.err = publishScript.Run(ctx, t.client, t.keys, c.args...).StringSlice()
		close(c.done)
		return
	}
	pipe := t.client.Pipeline()
	cmds := make([]*goredis.Cmd, len(live))
	for i, c := range live {
		cmds[i] = publishScript.EvalSha(ctx, pipe, t.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range live {
		cmd := cmds[i]
		if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// Redis lost its scripts (a restart): this one did not run, nor
			// did those after it; each is sent again, in order.
			cmd = publishScript.Eval(ctx, t.client, t.keys, c.args...)
		}
		c.res, c.err = cmd.StringSlice()
		close(c.done)
	}
}
