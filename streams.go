package caddysse

import (
	"time"

	"go.uber.org/zap"
)

// shutdownWait bounds how long the stopping of a config waits for its
// streams to write their final retry hint and end. Streams still writing
// after endWait have their writes cut.
const shutdownWait = time.Second

// shutdown ends every stream of this handler, refuses new ones, and waits
// (at most shutdownWait) for them to end, cutting the writes of those
// whose clients do not read: a reload or a stop never waits longer for a
// client. Caddy's HTTP server does not wait for streams whose connection
// was taken over, and would exit before they had written their final
// retry hint; it would wait forever for a response blocked on a client.
func (h *Subscribe) shutdown() {
	n := h.streams.close(endShutdown)
	if n == 0 {
		return
	}
	h.logger.Info("ending the streams: the config is being replaced, or Caddy is stopping", zap.String("hub", h.Hub), zap.Int("streams", n))
	if !h.streams.wait(shutdownWait) {
		h.logger.Warn("streams still open after the stop", zap.String("hub", h.Hub), zap.Duration("waited", shutdownWait))
	}
}

// probeInterval is the longest between two probes of the connections
// taken over, which tell when their clients have gone.
const probeInterval = 5 * time.Second

// tick is the period of the sweeper: a third of the heartbeat interval, so
// that no stream stays silent for much more than two thirds of it, and of
// write_timeout, so that a stalled stream ends after at most 4/3 of it.
func (h *Subscribe) tick() time.Duration {
	t := time.Duration(h.WriteTimeout) / 3
	if h.Heartbeat > 0 {
		t = min(t, time.Duration(h.Heartbeat)/3)
	}
	if h.Hijack {
		t = min(t, probeInterval)
	}
	return max(t, 10*time.Millisecond)
}

// sweep looks at every stream of the handler once a tick (stream.check)
// until the handler is cleaned up.
func (h *Subscribe) sweep(interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var streams []*stream
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
			streams = h.streams.snapshot(streams)
			now := clock()
			for _, st := range streams {
				st.check(now)
			}
			clear(streams)
		}
	}
}

// streamSet is the set of a handler's open streams.
type streamSet struct {
	registry[*stream]
}

// close ends every stream for reason, refuses new ones, and returns how
// many it ended.
func (ss *streamSet) close(reason endReason) int {
	streams := ss.registry.close()
	for _, st := range streams {
		st.sub.finish(reason)
	}
	return len(streams)
}

// wait waits up to timeout for a closed set to empty, and reports whether
// it did. After endWait, and every 100 ms from then on, it cuts the writes
// of the streams still there; an HTTP/2 stream still there after endWait
// has its connection closed: if the connection's socket is full (a client
// that reads nothing), not even the stream's reset or the server's GOAWAY
// can be written on it, and the server would wait for it for ever. The
// connection's other streams are ending too: their config is stopping.
func (ss *streamSet) wait(timeout time.Duration) bool {
	empty := ss.done()
	deadline := time.Now().Add(timeout)
	t := time.NewTimer(min(endWait, timeout))
	defer t.Stop()
	var streams []*stream
	for {
		select {
		case <-empty:
			return true
		case <-t.C:
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		streams = ss.snapshot(streams)
		for _, st := range streams {
			st.sub.interrupt()
			if st.shared != nil {
				_ = st.shared.Close()
			}
		}
		t.Reset(min(100*time.Millisecond, left))
	}
}
