package caddysse

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestExpiriesEndStreamsInTime: a route's streams end when their tokens
// expire, each at its own time and not before, with one timer for them
// all; a stream that ended first leaves the queue and is not ended again.
func TestExpiriesEndStreamsInTime(t *testing.T) {
	h := testHub(t)
	route := &Subscribe{Token: &TokenConfig{}}
	start := time.Now()
	type entry struct {
		st *stream
		at time.Time
	}
	var live, gone []entry
	for i, n := range rand.Perm(60) {
		st := startedStream(t, h, failingOutput{})
		st.route, st.expiryAt = route, -1
		at := start.Add(200*time.Millisecond + time.Duration(n)*10*time.Millisecond)
		route.expiries.add(st, at)
		if i%6 == 0 {
			gone = append(gone, entry{st, at})
		} else {
			live = append(live, entry{st, at})
		}
	}
	for _, e := range gone {
		route.expiries.remove(e.st) // as stream.end does
	}
	ended := map[*stream]time.Time{}
	deadline := time.Now().Add(wait)
	for len(ended) < len(live) && time.Now().Before(deadline) {
		for _, e := range live {
			if _, ok := ended[e.st]; !ok && e.st.sub.endReason() == endExpired {
				ended[e.st] = time.Now()
			}
		}
		time.Sleep(time.Millisecond)
	}
	for _, e := range live {
		at, ok := ended[e.st]
		switch {
		case !ok:
			t.Fatalf("a stream whose token expired at +%v did not end", e.at.Sub(start))
		case at.Before(e.at):
			t.Fatalf("a stream whose token expires at +%v ended at +%v", e.at.Sub(start), at.Sub(start))
		}
	}
	for _, e := range gone {
		if r := e.st.sub.endReason(); r != endNone {
			t.Fatalf("a stream taken out of the queue ended as %v", r)
		}
	}
	route.expiries.mu.Lock()
	left := len(route.expiries.queue)
	route.expiries.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d expiries left in the queue", left)
	}
	route.expiries.close()
}
