//go:build linux

package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	prevHi := uint64(0)
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, after %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= subBuckets && float64(hi-lo) > float64(lo)/subBuckets {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d", i, lo, hi, subBuckets)
		}
		prevHi = hi
		if hi == math.MaxUint64 {
			if i != numBuckets-1 {
				t.Fatalf("bucket %d ends the range, of %d buckets", i, numBuckets)
			}
			return
		}
	}
	t.Fatalf("the buckets end at %d", prevHi)
}

// exactPercentile is the nearest-rank percentile of sorted values.
func exactPercentile(sorted []time.Duration, q float64) time.Duration {
	rank := int(q*float64(len(sorted)) + 0.5)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func TestPercentiles(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, dist := range []struct {
		name string
		gen  func() time.Duration
	}{
		{"uniform 0-100ms", func() time.Duration { return time.Duration(r.Int64N(int64(100 * time.Millisecond))) }},
		{"exponential, mean 2ms", func() time.Duration { return time.Duration(r.ExpFloat64() * float64(2*time.Millisecond)) }},
		{"small", func() time.Duration { return time.Duration(r.IntN(100)) }},
	} {
		var h histogram
		values := make([]time.Duration, 100_000)
		for i := range values {
			values[i] = dist.gen()
			h.record(values[i])
		}
		slices.Sort(values)
		for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
			got, want := h.percentile(q), exactPercentile(values, q)
			if math.Abs(float64(got-want)) > float64(want)/subBuckets+1 {
				t.Errorf("%s: p%g = %v, want %v within 1/%d", dist.name, q*100, got, want, subBuckets)
			}
		}
		if h.maxValue() != values[len(values)-1] {
			t.Errorf("%s: max %v, want %v", dist.name, h.maxValue(), values[len(values)-1])
		}
		if h.count() != uint64(len(values)) {
			t.Errorf("%s: count %d", dist.name, h.count())
		}
	}
}

func TestPercentileEdges(t *testing.T) {
	var h histogram
	if h.percentile(0.99) != 0 || h.summary() != (latencySummary{}) {
		t.Error("an empty histogram has percentiles")
	}
	h.record(-time.Second)
	h.record(5 * time.Millisecond)
	if p := h.percentile(0.5); p != 0 {
		t.Errorf("p50 of {0, 5ms} = %v", p)
	}
	if p := h.percentile(0.99); p < 4900*time.Microsecond || p > 5*time.Millisecond {
		t.Errorf("p99 of {0, 5ms} = %v", p)
	}
}

func TestReceiptsAndTally(t *testing.T) {
	const n = 200
	acked := newBitset(nil, n)
	for i := range n {
		if i != 7 { // the publish of 7 failed
			acked.add(uint64(i))
		}
	}
	var a, b receipts
	a.reset(n)
	b.reset(n)
	for i := range n {
		a.add(uint64(i)) // everything, 7 included
		if i%10 != 3 {
			b.add(uint64(i)) // loses 3, 13, ..., 193
		}
	}
	b.add(5)   // duplicate
	b.add(5)   // duplicate
	b.add(n)   // out of range
	a.add(150) // duplicate
	var tl tally
	tl.addSubscriber(&a, acked)
	tl.addSubscriber(&b, acked)
	want := tally{
		Expected:    2 * (n - 1),
		Received:    n + 1 + (n - 20) + 2,
		Distinct:    n + (n - 20),
		Lost:        20,
		Duplicated:  3,
		Unexpected:  1,
		UnackedSeen: 2, // event 7 reached both
		LosingSubs:  1,
	}
	if tl != want {
		t.Errorf("tally\n got %+v\nwant %+v", tl, want)
	}
	// a reset for a smaller run reuses the memory and forgets everything
	old := &b.got[0]
	b.reset(64)
	if len(b.got) != 1 || &b.got[0] != old || b.got.count() != 0 || b.received != 0 {
		t.Errorf("reset kept %d words, count %d, received %d", len(b.got), b.got.count(), b.received)
	}
}

func TestVerdict(t *testing.T) {
	ok := stepReport{Subscribed: 10, Published: 100, LatencyMS: latencySummary{P99: 5}}
	if good, why := ok.verdict(100 * time.Millisecond); !good {
		t.Errorf("a clean run failed: %s", why)
	}
	for name, s := range map[string]stepReport{
		"lost":   {Subscribed: 10, tally: tally{Lost: 1}},
		"dup":    {Subscribed: 10, tally: tally{Duplicated: 1}},
		"slow":   {Subscribed: 10, LatencyMS: latencySummary{P99: 101}},
		"behind": {Subscribed: 10, Behind: true},
		"drop":   {Subscribed: 10, tally: tally{Disconnected: 1}},
		"errors": {Subscribed: 10, PublishErrors: 1},
		"empty":  {},
	} {
		if good, _ := s.verdict(100 * time.Millisecond); good {
			t.Errorf("%s: passed", name)
		}
	}
}
