package patternset

// indexFrom is the number of values from which a values keeps a map from
// value to position: below it, a linear search is cheaper than a map.
const indexFrom = 16

// entry is one value and the number of times it was added.
type entry[V comparable] struct {
	v V
	n int
}

// values is the counted values of one pattern: a slice, for iterating
// without allocating, and from indexFrom values on a map of their
// positions, so that adding and removing stay O(1) for a pattern that
// many subscribers follow. The zero values is empty.
type values[V comparable] struct {
	list  []entry[V]
	index map[V]int // position in list, when len(list) >= indexFrom
	peak  int       // the longest list since it was last reallocated
}

func (vs *values[V]) len() int { return len(vs.list) }

// find returns the position of v, or -1.
func (vs *values[V]) find(v V) int {
	if vs.index != nil {
		if i, ok := vs.index[v]; ok {
			return i
		}
		return -1
	}
	for i := range vs.list {
		if vs.list[i].v == v {
			return i
		}
	}
	return -1
}

// add counts v once more and reports whether it is new.
func (vs *values[V]) add(v V) bool {
	if i := vs.find(v); i >= 0 {
		vs.list[i].n++
		return false
	}
	vs.list = append(vs.list, entry[V]{v: v, n: 1})
	vs.peak = max(vs.peak, len(vs.list))
	switch {
	case vs.index != nil:
		vs.index[v] = len(vs.list) - 1
	case len(vs.list) >= indexFrom:
		vs.index = make(map[V]int, 2*indexFrom)
		for i, e := range vs.list {
			vs.index[e.v] = i
		}
	}
	return true
}

// remove undoes one add of v and reports whether v left the values and
// whether it was there at all.
func (vs *values[V]) remove(v V) (gone, found bool) {
	i := vs.find(v)
	if i < 0 {
		return false, false
	}
	if vs.list[i].n--; vs.list[i].n > 0 {
		return false, true
	}
	last := len(vs.list) - 1
	if i != last {
		vs.list[i] = vs.list[last]
		if vs.index != nil {
			vs.index[vs.list[i].v] = i
		}
	}
	vs.list[last] = entry[V]{} // keep nothing alive
	vs.list = vs.list[:last]
	if vs.index != nil {
		delete(vs.index, v)
		if len(vs.list) < indexFrom/2 {
			vs.index = nil
		}
	}
	vs.shrink()
	return true, true
}

// shrink gives back the room of a list that has emptied to a quarter of
// its peak (as package shrink does for maps), and the index's with it.
func (vs *values[V]) shrink() {
	n := len(vs.list)
	if n == 0 {
		*vs = values[V]{}
		return
	}
	if vs.peak < 64 || n > vs.peak/4 {
		return
	}
	vs.list = append([]entry[V](nil), vs.list...)
	vs.peak = n
	if vs.index != nil {
		index := make(map[V]int, n)
		for i, e := range vs.list {
			index[e.v] = i
		}
		vs.index = index
	}
}

// each calls yield with every value, once.
func (vs *values[V]) each(yield func(V)) {
	for i := range vs.list {
		yield(vs.list[i].v)
	}
}

// appendTo appends every value to dst.
func (vs *values[V]) appendTo(dst []V) []V {
	for i := range vs.list {
		dst = append(dst, vs.list[i].v)
	}
	return dst
}
