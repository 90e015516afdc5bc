package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// janitorEvery is how often a node applies the age limit, forgets idle
// topics, deletes a former epoch's keys and unsubscribes idle channels.
const janitorEvery = time.Second

// janitor does the periodic work until the transport closes.
func (t *Transport) janitor() {
	defer t.wg.Done()
	tick := time.NewTicker(janitorEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := t.withTimeout(t.ctx)
		t.rd.unsubscribeIdle(ctx, linger)
		if err := t.trim(ctx, false); err != nil && t.ctx.Err() == nil {
			t.logger.Debug("trimming the history", zap.Error(err))
		}
		cancel()
	}
}

// trim applies the history limits in Redis: age and bytes, and with all
// the per-topic count too (after SetLimits); and the idempotency records'
// day and budget.
func (t *Transport) trim(ctx context.Context, all bool) error {
	lim := t.limits.Load()
	scope := "age"
	if all {
		scope = "all"
	}
	cand := t.candidate()
	return redisError(trimScript.Run(ctx, t.client, t.keys, t.base, cand, lim.Events, lim.TTL.Milliseconds(), lim.MaxBytes, scope, lim.IdempotencyBudget()).Err())
}

// state runs the state script (see stateScript): the hub's epoch, seq,
// bytes, events and topics, and its idempotency keys and their bytes,
// expired events and keys dropped first. A hub whose seq in epoch is below
// seen starts a new epoch.
func (t *Transport) state(ctx context.Context, epoch string, seen uint64) ([]string, error) {
	lim := t.limits.Load()
	cand := t.candidate()
	res, err := stateScript.Run(ctx, t.client, t.keys, t.base, cand, epoch, seen, lim.TTL.Milliseconds(), lim.MaxBytes, t.rd.durability()).StringSlice()
	if err != nil {
		return nil, err
	}
	if len(res) != 7 {
		return nil, fmt.Errorf("unexpected answer from redis: %q", res)
	}
	t.used(cand, res[0])
	return res, nil
}

// Stats implements transport.Transport: the history's figures as Redis
// has them (the last ones read when Redis does not answer), and the
// state of this node's connection.
func (t *Transport) Stats() transport.Stats {
	var st transport.Stats
	if c := t.cached.Load(); c != nil {
		st = *c
	}
	if !t.closed.Load() {
		ctx, cancel := context.WithTimeout(t.ctx, min(t.timeout, time.Second))
		res, err := t.state(ctx, "", 0)
		cancel()
		if err == nil {
			st.Epoch = res[0]
			st.Head, _ = strconv.ParseUint(res[1], 10, 64)
			st.Bytes, _ = strconv.ParseInt(res[2], 10, 64)
			st.Events, _ = strconv.Atoi(res[3])
			st.Topics, _ = strconv.Atoi(res[4])
			st.Idempotency.Keys, _ = strconv.Atoi(res[5])
			st.Idempotency.Bytes, _ = strconv.ParseInt(res[6], 10, 64)
			c := st
			t.cached.Store(&c)
		}
	}
	up, lastErr, watched, lingering, resyncs := t.rd.state()
	_, delivered, _ := t.rd.progress()
	flavour := "sharded"
	if t.sharded.Load() == 2 {
		flavour = "classic"
	}
	st.State = transport.State{
		Up:            up && !t.closed.Load(),
		LastError:     lastErr,
		WatchedTopics: watched,
		Resyncs:       resyncs,
		Detail: map[string]any{
			"address":          t.address(),
			"prefix":           t.Prefix,
			"pubsub":           flavour,
			"delivered_seq":    delivered,
			"lingering_topics": lingering,
		},
	}
	return st
}
