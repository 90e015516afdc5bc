package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

// Timing of the janitor, which applies the age limit, forgets idle
// topics and the idempotency keys a day old, renews the keys' expiry,
// deletes a former epoch's keys, recounts the figures after an eviction
// (all in Redis: trimScript) and unsubscribes idle channels (locally).
//
// The trim script runs when it said it would be due (the next event to
// expire, the next renewal...), after the node published or changed its
// limits, when the reader or Stats found work for it (janitorWanted), and
// otherwise every janitorPoll, for what other nodes or Redis's eviction
// change: an idle hub costs Redis a script of a few reads every
// janitorPoll, which writes nothing.
const (
	// janitorEvery is how often the janitor wakes (which costs Redis
	// nothing), and the least time between two trim scripts.
	janitorEvery = time.Second
	// janitorPoll is the most time between two trim scripts.
	janitorPoll = 30 * time.Second
)

// janitor does the periodic work until the transport closes.
func (t *Transport) janitor() {
	defer t.wg.Done()
	tick := time.NewTicker(janitorEvery)
	defer tick.Stop()
	next := time.Now() // when the trim script is due
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := t.withTimeout(t.ctx)
		t.rd.unsubscribeIdle(ctx, linger)
		if t.janitorWanted.Swap(false) || !time.Now().Before(next) {
			due, err := t.trimDue(ctx, false)
			if err != nil {
				if t.ctx.Err() == nil {
					t.logger.Debug("trimming the history", zap.Error(err))
				}
				due = janitorEvery
			}
			next = time.Now().Add(due)
		}
		cancel()
	}
}

// wantJanitor asks the janitor to run the trim script at its next wake.
func (t *Transport) wantJanitor() {
	t.janitorWanted.Store(true)
}

// trim applies the history limits in Redis: age and bytes, and with all
// the per-topic count too (after SetLimits); and the idempotency records'
// day and budget.
func (t *Transport) trim(ctx context.Context, all bool) error {
	_, err := t.trimDue(ctx, all)
	return err
}

// trimDue is trim, and returns when it is due again (janitorPoll at
// most).
func (t *Transport) trimDue(ctx context.Context, all bool) (time.Duration, error) {
	lim := t.limits.Load()
	scope := "age"
	if all {
		scope = "all"
	}
	cand := t.candidate()
	ms, err := trimScript.Run(ctx, t.client, t.keys, t.base, cand, lim.Events, lim.TTL.Milliseconds(), lim.MaxBytes, scope, lim.IdempotencyBudget()).Int64()
	if err != nil {
		return 0, redisError(err)
	}
	if ms < 0 || ms >= janitorPoll.Milliseconds() {
		return janitorPoll, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Modes of the state script (see stateScript).
const (
	stateProbe = "probe" // epoch and seq: the reader's periodic check
	stateRun   = "run"   // epoch and seq, with the run-id check
	stateStats = "stats" // the figures
	stateCheck = "check" // the figures, with the run-id check and a write (when the hub opens)
)

// state runs the state script (see stateScript) in mode: the hub's epoch
// and seq, and for stateStats and stateCheck its bytes, events and
// topics, its idempotency keys and their bytes, and the history's cost
// to Redis (estimated), expired events and keys dropped first. A hub
// whose seq in epoch is below seen starts a new epoch. When the script
// finds work for the janitor, it is woken.
func (t *Transport) state(ctx context.Context, epoch string, seen uint64, mode string) ([]string, error) {
	lim := t.limits.Load()
	cand := t.candidate()
	res, err := stateScript.Run(ctx, t.client, t.keys, t.base, cand, epoch, seen, lim.TTL.Milliseconds(), lim.MaxBytes, t.rd.durability(), mode).StringSlice()
	if err != nil {
		return nil, err
	}
	want := 9
	if mode == stateProbe || mode == stateRun {
		want = 3
	}
	if len(res) != want {
		return nil, fmt.Errorf("unexpected answer from redis: %q", res)
	}
	t.used(cand, res[0])
	if res[want-1] == "1" {
		t.wantJanitor()
	}
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
		res, err := t.state(ctx, "", 0, stateStats)
		cancel()
		if err != nil {
			// Redis may hang: let the reader check its connection now
			// rather than at its next PING
			t.rd.kickProbe()
		} else {
			st.Epoch = res[0]
			st.Head, _ = strconv.ParseUint(res[1], 10, 64)
			st.Bytes, _ = strconv.ParseInt(res[2], 10, 64)
			st.Events, _ = strconv.Atoi(res[3])
			st.Topics, _ = strconv.Atoi(res[4])
			st.Idempotency.Keys, _ = strconv.Atoi(res[5])
			st.Idempotency.Bytes, _ = strconv.ParseInt(res[6], 10, 64)
			cost, _ := strconv.ParseInt(res[7], 10, 64)
			t.costEstimate.Store(cost)
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
		Up:              up && !t.closed.Load(),
		LastError:       lastErr,
		WatchedTopics:   watched,
		WatchedPatterns: t.rd.patternCount(),
		Resyncs:         resyncs,
		Detail: map[string]any{
			"address":          t.address(),
			"prefix":           t.Prefix,
			"pubsub":           flavour,
			"delivered_seq":    delivered,
			"lingering_topics": lingering,
			// what the history costs Redis, estimated (see sizing.go)
			"redis_bytes_estimate": t.costEstimate.Load(),
		},
	}
	return st
}
