package caddysse

import "sync"

// registry is the set of a handler's requests in progress that a stop of
// its config must end: a subscribe route's streams, a publish route's
// (or the admin API's) publishes still reading their body. Once closed,
// it refuses new members, and done is closed when the last one leaves.
// The zero value is ready to use.
type registry[T comparable] struct {
	mu     sync.Mutex
	set    map[T]struct{}
	closed bool
	empty  chan struct{} // made on first use; closed once closed and empty
}

// add adds v, unless the registry was closed.
func (r *registry[T]) add(v T) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if r.set == nil {
		r.set = make(map[T]struct{})
	}
	r.set[v] = struct{}{}
	return true
}

// remove removes v and reports whether it was there.
func (r *registry[T]) remove(v T) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[v]; !ok {
		return false
	}
	delete(r.set, v)
	r.signalEmpty()
	return true
}

// snapshot appends the members to buf[:0] and returns it, so that they
// can be acted on without holding the registry's lock (probing or ending
// a connection is a system call).
func (r *registry[T]) snapshot(buf []T) []T {
	buf = buf[:0]
	r.mu.Lock()
	defer r.mu.Unlock()
	for v := range r.set {
		buf = append(buf, v)
	}
	return buf
}

// close refuses new members from now on and returns the present ones,
// for the caller to end.
func (r *registry[T]) close() []T {
	r.mu.Lock()
	r.closed = true
	r.signalEmpty()
	r.mu.Unlock()
	return r.snapshot(nil)
}

// done returns a channel closed once the registry is closed and empty.
func (r *registry[T]) done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lazyEmpty()
	return r.empty
}

// signalEmpty closes empty once the registry is closed and empty. The
// caller holds mu.
func (r *registry[T]) signalEmpty() {
	if !r.closed || len(r.set) > 0 {
		return
	}
	r.lazyEmpty()
	select {
	case <-r.empty:
	default:
		close(r.empty)
	}
}

// lazyEmpty makes the empty channel. The caller holds mu.
func (r *registry[T]) lazyEmpty() {
	if r.empty == nil {
		r.empty = make(chan struct{})
	}
}
