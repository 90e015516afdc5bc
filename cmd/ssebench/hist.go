//go:build linux

package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear: values below 2^subBits nanoseconds have a
// bucket each; above, every power of two is split into 2^subBits buckets,
// so that a percentile is known within 1/2^subBits (1.6 %) of its value.
const (
	subBits    = 6
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

// histogram counts durations. It is safe for concurrent use; recording is
// a few atomic adds, without allocation.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
}

// bucketOf returns the bucket of v nanoseconds.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // v>>e is in [subBuckets, 2*subBuckets)
	return (e+1)<<subBits + int(v>>e) - subBuckets
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subBuckets {
		return uint64(i), uint64(i)
	}
	e := i>>subBits - 1
	m := uint64(i&(subBuckets-1) + subBuckets)
	return m << e, (m+1)<<e - 1
}

// record counts one duration; negative ones count as zero.
func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// count returns the number of recorded durations.
func (h *histogram) count() uint64 { return h.n.Load() }

// percentile returns the duration below or at which a fraction q of the
// recorded ones lie: the middle of its bucket, never above the maximum.
func (h *histogram) percentile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	rank = min(rank, n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bucketRange(i)
			return min(time.Duration(lo+(hi-lo)/2), h.maxValue())
		}
	}
	return h.maxValue()
}

// maxValue returns the largest recorded duration.
func (h *histogram) maxValue() time.Duration { return time.Duration(h.max.Load()) }

// mean returns the average recorded duration.
func (h *histogram) mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// latencySummary is a histogram's percentiles in milliseconds.
type latencySummary struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (h *histogram) summary() latencySummary {
	return latencySummary{
		P50:  ms(h.percentile(0.50)),
		P90:  ms(h.percentile(0.90)),
		P99:  ms(h.percentile(0.99)),
		P999: ms(h.percentile(0.999)),
		Max:  ms(h.maxValue()),
		Mean: ms(h.mean()),
	}
}

// ms returns d in milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
