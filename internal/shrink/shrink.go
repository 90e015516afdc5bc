// Package shrink gives back the memory of maps that have emptied: a Go
// map keeps the room of its largest size after its entries are deleted,
// so that a hub whose subscribers (and their topics) come and go would
// hold the room of its busiest moment for ever.
package shrink

// minPeak is the smallest peak worth rebuilding a map for.
const minPeak = 1024

// Map returns m, or a copy of m when it has shrunk to a quarter of its
// peak, the largest length it had since the last copy, which *peak
// tracks. Call it after deleting from m, with m's lock held; growing m
// updates the peak on the next call.
func Map[K comparable, V any](m map[K]V, peak *int) map[K]V {
	n := len(m)
	if n > *peak {
		*peak = n
		return m
	}
	if *peak < minPeak || n > *peak/4 {
		return m
	}
	out := make(map[K]V, n)
	for k, v := range m {
		out[k] = v
	}
	*peak = n
	return out
}

// Grown records that m grew, for a map that is not always passed to Map
// after it grows.
func Grown[K comparable, V any](m map[K]V, peak *int) {
	*peak = max(*peak, len(m))
}
