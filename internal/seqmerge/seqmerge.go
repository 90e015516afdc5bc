// Package seqmerge merges lists of events that are each sorted by
// sequence number, in sequence order, each sequence number once: the
// events of a subscription's topics, where an event of several topics is
// in each of their lists.
package seqmerge

// Merge calls yield with the elements of lists in increasing order of
// seq, an element whose seq is in several lists once, until yield returns
// false or the lists are exhausted. It advances lists in place past what
// it yielded, and reports whether elements remain. Each list must be in
// increasing order of seq. Merging n elements of k lists costs about
// n log k comparisons, and nothing is allocated for up to 64 lists (the most topics of a
// subscription by default).
func Merge[T any](lists [][]T, seq func(T) uint64, yield func(T) bool) bool {
	if len(lists) == 1 {
		return one(lists, yield)
	}
	var buf [64]entry
	h := buf[:0]
	if len(lists) > len(buf) {
		h = make([]entry, 0, len(lists))
	}
	for i, l := range lists {
		if len(l) > 0 {
			h = push(h, entry{seq(l[0]), i})
		}
	}
	for len(h) > 0 {
		top := h[0]
		if !yield(lists[top.list][0]) {
			return true
		}
		for len(h) > 0 && h[0].seq == top.seq {
			i := h[0].list
			lists[i] = lists[i][1:]
			if len(lists[i]) == 0 {
				h[0] = h[len(h)-1]
				h = h[:len(h)-1]
			} else {
				h[0].seq = seq(lists[i][0])
			}
			down(h, 0)
		}
	}
	return false
}

// one yields from a single list.
func one[T any](lists [][]T, yield func(T) bool) bool {
	l := lists[0]
	for i, x := range l {
		if !yield(x) {
			lists[0] = l[i:]
			return true
		}
	}
	lists[0] = l[len(l):]
	return false
}

// entry is a non-empty list in a heap: its index, and the seq of its
// first element. The heap's top is the list with the lowest seq.
type entry struct {
	seq  uint64
	list int
}

// push adds e to the heap h.
func push(h []entry, e entry) []entry {
	h = append(h, e)
	for j := len(h) - 1; j > 0; {
		p := (j - 1) / 2
		if h[j].seq >= h[p].seq {
			break
		}
		h[j], h[p] = h[p], h[j]
		j = p
	}
	return h
}

// down moves the entry at j down the heap h to its place.
func down(h []entry, j int) {
	n := len(h)
	for {
		l, m := 2*j+1, j
		if l < n && h[l].seq < h[m].seq {
			m = l
		}
		if l+1 < n && h[l+1].seq < h[m].seq {
			m = l + 1
		}
		if m == j {
			return
		}
		h[j], h[m] = h[m], h[j]
		j = m
	}
}
