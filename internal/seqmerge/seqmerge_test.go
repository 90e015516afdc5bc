package seqmerge

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func id(x uint64) uint64 { return x }

// TestMerge merges random lists, with shared elements, against sorting
// their union, stopping after every possible count.
func TestMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		k := 1 + r.IntN(70)
		lists := make([][]uint64, k)
		var all []uint64
		for s := uint64(1); s < uint64(20+r.IntN(300)); s++ {
			for i := range lists {
				if r.IntN(k+1) == 0 { // an element may be in several lists
					lists[i] = append(lists[i], s)
					all = append(all, s)
				}
			}
		}
		slices.Sort(all)
		all = slices.Compact(all)
		for stop := 0; stop <= len(all); stop += 1 + len(all)/7 {
			ls := make([][]uint64, k)
			for i := range lists {
				ls[i] = slices.Clone(lists[i])
			}
			var got []uint64
			more := Merge(ls, id, func(x uint64) bool {
				if len(got) == stop {
					return false
				}
				got = append(got, x)
				return true
			})
			if !slices.Equal(got, all[:stop]) {
				t.Fatalf("round %d, %d lists, stop %d: got %v, want %v", round, k, stop, got, all[:stop])
			}
			if more != (stop < len(all)) {
				t.Fatalf("round %d, stop %d of %d: more %v", round, stop, len(all), more)
			}
			// what is left starts after what was yielded
			var rest []uint64
			Merge(ls, id, func(x uint64) bool { rest = append(rest, x); return true })
			if !slices.Equal(append(got, rest...), all) {
				t.Fatalf("round %d, stop %d: the rest %v does not follow %v", round, stop, rest, got)
			}
		}
	}
}

func TestMergeEmpty(t *testing.T) {
	if Merge([][]uint64{}, id, func(uint64) bool { t.Fatal("yielded"); return true }) {
		t.Fatal("more from no lists")
	}
	if Merge([][]uint64{nil, nil}, id, func(uint64) bool { t.Fatal("yielded"); return true }) {
		t.Fatal("more from empty lists")
	}
}

// BenchmarkMerge merges 64 lists of 1,000 interleaved elements.
func BenchmarkMerge(b *testing.B) {
	lists := make([][]uint64, 64)
	for s := range uint64(64000) {
		lists[s%64] = append(lists[s%64], s+1)
	}
	ls := make([][]uint64, 64)
	b.ReportAllocs()
	for b.Loop() {
		copy(ls, lists)
		n := 0
		Merge(ls, id, func(uint64) bool { n++; return n < 700 })
	}
}
