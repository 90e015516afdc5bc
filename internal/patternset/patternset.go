// Package patternset holds topic patterns, each with the values that
// follow it (a hub's pattern subscribers, say), indexed so that finding
// the values whose patterns match a published topic costs the topic's
// segments and the matching patterns, not the number of patterns held:
// a hub matches every event it delivers against its pattern
// subscriptions, and a hundred thousand of them on other prefixes must
// not slow it down (issue 22).
//
// The patterns are those of package access (SPEC section 10), matched
// exactly as access.Match does: a topic is split on "/" into segments
// (the empty topic has none, "a/" has two, the second empty); a segment
// "*" matches exactly one segment, an empty one too; a segment "**" that
// is the pattern's last matches one or more segments; any other segment,
// a "**" that is not the last among them, is literal.
//
// The set is a trie of pattern segments: a pattern is a path from the
// root, one node per segment, its "*" segments on a node's star edge,
// its other segments on literal edges, and a last "**" not as an edge
// but as the values that its node holds for "one segment or more". A
// topic is matched by walking it down the trie, following at each node
// the literal edge of its next segment and the star edge: the nodes it
// reaches are exactly the patterns' prefixes that match the topic's
// prefix, so the walk visits each matching pattern once and the patterns
// on other prefixes not at all.
//
// The package is called patternset, not after its trie, because what its
// callers rely on is the set's contract (Add, Remove, Match agreeing with
// access.Match); the trie is how it keeps that contract cheap.
package patternset

import (
	"strings"

	"github.com/ssehub/caddy-sse/internal/shrink"
)

// Set is a set of topic patterns, each holding values of type V. A value
// may follow several patterns, and a pattern may hold many values. Each
// (pattern, value) pair is counted: it stays in the set until it has
// been removed as many times as it was added, and Match visits it once
// however many times it was added.
//
// The zero Set is empty and ready to use. A Set is not safe for
// concurrent use: Add and Remove must not overlap each other or Match;
// Match calls may overlap each other, as they only read.
type Set[V comparable] struct {
	root  node[V]
	pairs int // distinct (pattern, value) pairs
	nodes int // nodes besides the root
}

// node is the end of a path of pattern segments from the root: it holds
// the values of the pattern that ends here (end), those of the pattern
// that continues with a last "**" here (rest), and the edges to longer
// patterns.
type node[V comparable] struct {
	end      values[V]           // the pattern of exactly this path
	rest     values[V]           // this path followed by "**"
	star     *node[V]            // this path followed by "*"
	children map[string]*node[V] // this path followed by a literal segment
	peak     int                 // the most children since children was last rebuilt (shrink.Map)
}

// empty reports whether n holds nothing and leads nowhere.
func (n *node[V]) empty() bool {
	return n.end.len() == 0 && n.rest.len() == 0 && n.star == nil && len(n.children) == 0
}

// Add adds v to the values of pattern, counting the pair once more when it
// is already there, and reports whether the pair is new. Any string is a
// pattern (see the package comment); the empty one matches only the empty
// topic.
func (s *Set[V]) Add(pattern string, v V) bool {
	n := &s.root
	for pattern != "" { // else no segments: the root's own pattern
		seg, rest, more := strings.Cut(pattern, "/")
		if seg == "**" && !more {
			return s.added(n.rest.add(v))
		}
		n = s.child(n, seg)
		if !more {
			break
		}
		pattern = rest
		if pattern == "" { // a last segment that is empty ("a/")
			n = s.child(n, "")
			break
		}
	}
	return s.added(n.end.add(v))
}

// added counts a pair that add reported new.
func (s *Set[V]) added(isNew bool) bool {
	if isNew {
		s.pairs++
	}
	return isNew
}

// child returns n's edge for seg, making it if needed.
func (s *Set[V]) child(n *node[V], seg string) *node[V] {
	if seg == "*" {
		if n.star == nil {
			n.star = new(node[V])
			s.nodes++
		}
		return n.star
	}
	c := n.children[seg]
	if c == nil {
		if n.children == nil {
			n.children = make(map[string]*node[V])
		}
		c = new(node[V])
		n.children[strings.Clone(seg)] = c // never keep alive the string the pattern was cut from
		shrink.Grown(n.children, &n.peak)
		s.nodes++
	}
	return c
}

// Remove undoes one Add of (pattern, v) and reports whether the pair
// left the set (it had been added once more than removed). Removing a
// pair that is not in the set does nothing and reports false. The nodes
// that no longer lead to any value are freed.
func (s *Set[V]) Remove(pattern string, v V) bool {
	var gone, found bool
	if pattern == "" {
		gone, found = s.root.end.remove(v)
	} else {
		gone, found = s.remove(&s.root, pattern, v)
	}
	if gone {
		s.pairs--
	}
	return gone && found
}

// remove undoes one Add of (pattern, v) below n, where pattern is what
// follows n's path and has one segment at least (an empty one, maybe),
// pruning the nodes it empties; it reports whether the pair left the set
// and whether it was found at all.
func (s *Set[V]) remove(n *node[V], pattern string, v V) (gone, found bool) {
	seg, rest, more := strings.Cut(pattern, "/")
	if seg == "**" && !more {
		return n.rest.remove(v)
	}
	var c *node[V]
	if seg == "*" {
		c = n.star
	} else {
		c = n.children[seg]
	}
	if c == nil {
		return false, false
	}
	if more {
		gone, found = s.remove(c, rest, v)
	} else {
		gone, found = c.end.remove(v)
	}
	if gone && c.empty() {
		s.nodes--
		if seg == "*" {
			n.star = nil
		} else {
			delete(n.children, seg)
			n.children = shrink.Map(n.children, &n.peak)
			if len(n.children) == 0 {
				n.children, n.peak = nil, 0
			}
		}
	}
	return gone, found
}

// Len returns the number of distinct (pattern, value) pairs in the set.
func (s *Set[V]) Len() int { return s.pairs }

// Nodes returns the number of trie nodes besides the root: what the set
// holds for its patterns' segments, for those who count its memory.
func (s *Set[V]) Nodes() int { return s.nodes }

// Match calls yield with the value of every (pattern, value) pair whose
// pattern matches topic (as access.Match(pattern, topic) does), once per
// pair, in no particular order: a value that follows several matching
// patterns is yielded once for each. yield must not change the set. Match
// does not allocate; its cost is the topic's segments times the matching
// paths of the trie, and the values yielded.
func (s *Set[V]) Match(topic string, yield func(V)) {
	if s.pairs == 0 {
		return
	}
	if topic == "" {
		s.root.end.each(yield) // the empty topic: no segments
		return
	}
	match(&s.root, topic, yield)
}

// match yields the values of the patterns below n that match topic, which
// has one segment left at least.
func match[V comparable](n *node[V], topic string, yield func(V)) {
	for {
		n.rest.each(yield) // "**": one segment or more, and topic has some
		seg, rest, more := strings.Cut(topic, "/")
		lit := n.children[seg]
		if n.star != nil {
			if lit != nil {
				matchNext(lit, rest, more, yield) // two ways on: recurse into one
			}
			lit = n.star
		}
		if lit == nil {
			return
		}
		if !more {
			lit.end.each(yield)
			return
		}
		n, topic = lit, rest
	}
}

// matchNext yields the values of the patterns below n that match the
// rest of a topic: topic when more, else nothing (n's path is then the
// whole topic).
func matchNext[V comparable](n *node[V], topic string, more bool, yield func(V)) {
	if !more {
		n.end.each(yield)
		return
	}
	match(n, topic, yield)
}

// AppendMatches appends to dst the values that Match would yield for
// topic, and returns the extended slice. It allocates only when dst has
// no room left.
func (s *Set[V]) AppendMatches(dst []V, topic string) []V {
	if s.pairs == 0 {
		return dst
	}
	if topic == "" {
		return s.root.end.appendTo(dst)
	}
	return appendMatches(&s.root, topic, dst)
}

// appendMatches is match appending to dst instead of calling a function,
// so that no closure is needed.
func appendMatches[V comparable](n *node[V], topic string, dst []V) []V {
	for {
		dst = n.rest.appendTo(dst)
		seg, rest, more := strings.Cut(topic, "/")
		lit := n.children[seg]
		if n.star != nil {
			if lit != nil {
				if more {
					dst = appendMatches(lit, rest, dst)
				} else {
					dst = lit.end.appendTo(dst)
				}
			}
			lit = n.star
		}
		if lit == nil {
			return dst
		}
		if !more {
			return lit.end.appendTo(dst)
		}
		n, topic = lit, rest
	}
}

// Patterns calls yield with every pattern of the set that holds a value
// and the number of its distinct values, in no particular order (for the
// admin API and tests; it allocates the patterns' names).
func (s *Set[V]) Patterns(yield func(pattern string, values int)) {
	s.root.walk("", true, yield)
}

// walk yields the patterns at and below n, whose path is prefix (root:
// the root's path, which has no segments).
func (n *node[V]) walk(prefix string, root bool, yield func(string, int)) {
	join := func(seg string) string {
		if root {
			return seg
		}
		return prefix + "/" + seg
	}
	if k := n.end.len(); k > 0 {
		yield(prefix, k)
	}
	if k := n.rest.len(); k > 0 {
		yield(join("**"), k)
	}
	if n.star != nil {
		n.star.walk(join("*"), false, yield)
	}
	for seg, c := range n.children {
		c.walk(join(seg), false, yield)
	}
}

// IsPattern reports whether pattern has a wildcard segment, a "*" or a
// last "**", that is whether it may match a topic other than itself: a
// string without one (such as "a*b" or "a/**/b") matches only the topic
// equal to it, and a hub in pattern mode (SPEC section 11) can follow it
// as a plain topic.
func IsPattern(pattern string) bool {
	if pattern == "" {
		return false
	}
	for {
		seg, rest, more := strings.Cut(pattern, "/")
		if seg == "*" || (seg == "**" && !more) {
			return true
		}
		if !more {
			return false
		}
		pattern = rest
	}
}
