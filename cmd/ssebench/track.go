//go:build linux

package main

import "math/bits"

// bitset is a set of small non-negative integers.
type bitset []uint64

// newBitset returns a set able to hold 0..n-1, reusing b's memory.
func newBitset(b bitset, n int) bitset {
	words := (n + 63) / 64
	if cap(b) >= words {
		b = b[:words]
		clear(b)
		return b
	}
	return make(bitset, words)
}

// add adds i, which must be in range, and reports whether it was absent.
func (b bitset) add(i uint64) bool {
	w, mask := i/64, uint64(1)<<(i%64)
	if b[w]&mask != 0 {
		return false
	}
	b[w] |= mask
	return true
}

// count returns the size of the set.
func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// missing returns how many members of want are not in b.
func (b bitset) missing(want bitset) int {
	n := 0
	for i, w := range want {
		var have uint64
		if i < len(b) {
			have = b[i]
		}
		n += bits.OnesCount64(w &^ have)
	}
	return n
}

// receipts records which events of one run a subscriber received. The
// events of its topic are numbered seq/K, so that each subscriber's set
// is as small as its topic's share of the run.
type receipts struct {
	got        bitset
	size       uint64 // events of the run on the subscriber's topic
	received   uint64 // events of the run received, duplicates included
	duplicated uint64 // received again
	unexpected uint64 // of another topic, or out of the run's range
}

// reset prepares for a run of n events on the subscriber's topic.
func (r *receipts) reset(n int) {
	r.got = newBitset(r.got, n)
	r.size = uint64(n)
	r.received, r.duplicated, r.unexpected = 0, 0, 0
}

// add records the receipt of the event numbered idx within the topic and
// reports whether it was its first.
func (r *receipts) add(idx uint64) bool {
	if idx >= r.size {
		r.unexpected++
		return false
	}
	added := r.got.add(idx)
	r.received++
	if !added {
		r.duplicated++
	}
	return added
}

// tally is the loss accounting of one run over all subscribers.
type tally struct {
	Expected     uint64 `json:"expected"`
	Received     uint64 `json:"received"`
	Distinct     uint64 `json:"distinct"`
	Lost         uint64 `json:"lost"`
	Duplicated   uint64 `json:"duplicated"`
	Unexpected   uint64 `json:"unexpected"`
	UnackedSeen  uint64 `json:"unacked_received"`
	LosingSubs   int    `json:"subscribers_with_loss"`
	Disconnected int    `json:"disconnected"`
}

// addSubscriber counts one subscriber's receipts against the events that
// were acknowledged on its topic.
func (t *tally) addSubscriber(r *receipts, acked bitset) {
	want := uint64(acked.count())
	lost := uint64(r.got.missing(acked))
	got := uint64(r.got.count())
	t.Expected += want
	t.Received += r.received
	t.Distinct += got
	t.Lost += lost
	t.Duplicated += r.duplicated
	t.Unexpected += r.unexpected
	t.UnackedSeen += uint64(acked.missing(r.got))
	if lost > 0 {
		t.LosingSubs++
	}
}
