package patternset

import (
	"strings"

	"github.com/ssehub/caddy-sse/internal/shrink"
)

// Index is the other way round from Set: a set of topics, each with one
// value, that finds the topics a pattern matches (as access.Match does)
// by walking the pattern down a trie of the topics' segments, so that a
// query costs the trie nodes its pattern reaches, not the number of
// topics: "news/*" visits the children of "news", not the other topics of
// the hub. A pattern ending in "**", or made of "*" segments, reaches the
// subtrees it matches whole: "**" costs every topic.
//
// A transport keeps its topics in an Index to find the topics of a
// pattern subscription's replay (transport.PatternTransport).
//
// The zero Index is empty and ready to use. An Index is not safe for
// concurrent use: Put and Delete must not overlap each other or Match;
// Match calls may overlap each other, as they only read.
type Index[V any] struct {
	root  inode[V]
	n     int // topics
	nodes int // nodes besides the root
}

// inode is a topic prefix of an Index: the value of the topic that ends
// here, if any, and the longer topics by their next segment.
type inode[V any] struct {
	v        V
	has      bool // a topic ends here
	children map[string]*inode[V]
	peak     int // the most children since children was last rebuilt (shrink.Map)
}

// Put sets the value of topic, adding the topic if it is new, and reports
// whether it is. Any string is a topic: "*" and "**" segments are
// literal in it.
func (x *Index[V]) Put(topic string, v V) bool {
	n := &x.root
	if topic != "" {
		for {
			seg, rest, more := strings.Cut(topic, "/")
			c := n.children[seg]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*inode[V])
				}
				c = new(inode[V])
				n.children[strings.Clone(seg)] = c
				shrink.Grown(n.children, &n.peak)
				x.nodes++
			}
			n = c
			if !more {
				break
			}
			topic = rest
		}
	}
	isNew := !n.has
	n.v, n.has = v, true
	if isNew {
		x.n++
	}
	return isNew
}

// Delete removes topic and reports whether it was there. The nodes that
// no longer lead to any topic are freed.
func (x *Index[V]) Delete(topic string) bool {
	var found bool
	if topic == "" {
		found = x.root.has
		var zero V
		x.root.v, x.root.has = zero, false
	} else {
		found = x.delete(&x.root, topic)
	}
	if found {
		x.n--
	}
	return found
}

// delete removes the topic that follows n's path (one segment at least)
// and prunes the nodes it empties; it reports whether it was there.
func (x *Index[V]) delete(n *inode[V], topic string) bool {
	seg, rest, more := strings.Cut(topic, "/")
	c := n.children[seg]
	if c == nil {
		return false
	}
	var found bool
	if more {
		found = x.delete(c, rest)
	} else if found = c.has; found {
		var zero V
		c.v, c.has = zero, false
	}
	if found && !c.has && len(c.children) == 0 {
		x.nodes--
		delete(n.children, seg)
		n.children = shrink.Map(n.children, &n.peak)
		if len(n.children) == 0 {
			n.children, n.peak = nil, 0
		}
	}
	return found
}

// Len returns the number of topics.
func (x *Index[V]) Len() int { return x.n }

// Nodes returns the number of trie nodes besides the root.
func (x *Index[V]) Nodes() int { return x.nodes }

// Get returns the value of topic, and whether the index has it.
func (x *Index[V]) Get(topic string) (V, bool) {
	n := &x.root
	if topic != "" {
		for {
			seg, rest, more := strings.Cut(topic, "/")
			if n = n.children[seg]; n == nil {
				var zero V
				return zero, false
			}
			if !more {
				break
			}
			topic = rest
		}
	}
	return n.v, n.has
}

// Match calls yield with the value of every topic that pattern matches
// (as access.Match(pattern, topic) does), once each, in no particular
// order, until yield returns false; it reports whether it went through
// them all. yield must not change the index. Match allocates nothing of
// its own.
func (x *Index[V]) Match(pattern string, yield func(V) bool) bool {
	if pattern == "" {
		return !x.root.has || yield(x.root.v) // only the empty topic
	}
	return x.root.match(pattern, yield)
}

// match yields the values of the topics below n that match pattern, which
// has one segment left at least.
func (n *inode[V]) match(pattern string, yield func(V) bool) bool {
	seg, rest, more := strings.Cut(pattern, "/")
	switch {
	case seg == "**" && !more:
		for _, c := range n.children {
			if !c.all(yield) {
				return false
			}
		}
		return true
	case seg == "*":
		for _, c := range n.children {
			if !c.next(rest, more, yield) {
				return false
			}
		}
		return true
	default:
		c := n.children[seg]
		return c == nil || c.next(rest, more, yield)
	}
}

// next yields the values below n that match the rest of a pattern:
// pattern when more, else n's own (n's path is then the whole topic).
func (n *inode[V]) next(pattern string, more bool, yield func(V) bool) bool {
	if !more {
		return !n.has || yield(n.v)
	}
	return n.match(pattern, yield)
}

// all yields the values of n and of every topic below it.
func (n *inode[V]) all(yield func(V) bool) bool {
	if n.has && !yield(n.v) {
		return false
	}
	for _, c := range n.children {
		if !c.all(yield) {
			return false
		}
	}
	return true
}
