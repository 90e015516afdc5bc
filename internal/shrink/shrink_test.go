package shrink

import (
	"fmt"
	"runtime"
	"testing"
)

// TestMapGivesBackItsRoom: a map of 100,000 entries emptied to 100 holds
// the room of 100,000 until Map copies it; the copy keeps every entry.
func TestMapGivesBackItsRoom(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap()
	m := make(map[string]int)
	peak := 0
	for i := range 100000 {
		m[fmt.Sprint("key-", i)] = i
		Grown(m, &peak)
	}
	for i := 100; i < 100000; i++ {
		delete(m, fmt.Sprint("key-", i))
		m = Map(m, &peak)
	}
	if len(m) != 100 {
		t.Fatalf("%d entries, want 100", len(m))
	}
	for i := range 100 {
		if m[fmt.Sprint("key-", i)] != i {
			t.Fatalf("entry %d lost", i)
		}
	}
	if grown := int64(heap()) - int64(base); grown > 1<<20 {
		t.Fatalf("100 entries left hold %d bytes", grown)
	}
	runtime.KeepAlive(m)
}

// TestMapLeavesSmallMapsAlone: below its minimum peak, or above a
// quarter of its peak, a map is returned as it is.
func TestMapLeavesSmallMapsAlone(t *testing.T) {
	m := map[int]int{}
	peak := 0
	for i := range 1000 {
		m[i] = i
		Grown(m, &peak)
	}
	for i := range 990 {
		delete(m, i)
	}
	m2 := Map(m, &peak)
	m2[-1] = 0
	if _, ok := m[-1]; !ok {
		t.Fatal("a map under the minimum peak was copied")
	}
	big := map[int]int{}
	peak = 0
	for i := range 4000 {
		big[i] = i
		Grown(big, &peak)
	}
	for i := range 2000 {
		delete(big, i)
	}
	b2 := Map(big, &peak)
	b2[-1] = 0
	if _, ok := big[-1]; !ok {
		t.Fatal("a map at half its peak was copied")
	}
}
