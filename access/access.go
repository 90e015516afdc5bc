// Package access decides who may read and publish which topics of a
// caddy-sse hub: topic patterns (allow, and the topics a token grants)
// and signed tokens (RFC 7519 JWTs, verified with golang-jwt). See SPEC
// section 10.
//
// A topic is made of the segments between its "/"s: "a//b" has three, the
// middle one empty, "a/" has two, the second empty, and the empty topic
// has none. A pattern is split the same way: a segment "*" matches
// exactly one segment of a topic (an empty one too, as "+" does in MQTT),
// a segment "**" that is the pattern's last matches one or more; any
// other character is literal, so "a*b" matches only "a*b", and a "**"
// that is not the last segment ("a/**/b") is a literal segment "**" too.
// A pattern without wildcard segments matches the one topic equal to it.
// The pattern "**" alone matches every topic but the empty one, "*" alone
// every topic of one segment (that is, without "/").
package access

import "strings"

// Match reports whether topic matches pattern. It does not allocate.
func Match(pattern, topic string) bool {
	if pattern == "" || topic == "" {
		return pattern == topic // no segments: only the empty topic
	}
	for {
		p, prest, pmore := strings.Cut(pattern, "/")
		if p == "**" && !pmore {
			return true // the topic has one segment left at least
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if p != t && p != "*" {
			return false
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		pattern, topic = prest, trest
	}
}

// MatchAny reports whether topic matches one of patterns. It does not
// allocate.
func MatchAny(patterns []string, topic string) bool {
	for _, p := range patterns {
		if Match(p, topic) {
			return true
		}
	}
	return false
}

// Covers reports whether every topic that the subscription pattern sub
// can match (a topic, or a pattern with "*" and "**" segments) matches
// one of patterns: a pattern subscription is allowed only when all it
// may ever receive is. For a sub without wildcard segments it is
// MatchAny(patterns, sub).
//
// The patterns are taken together: ["a/*", "a/*/**"] covers "a/**", as
// "a/*" covers its topics of two segments and "a/*/**" the longer ones.
func Covers(patterns []string, sub string) bool {
	prefix, open := openPrefix(sub)
	if !open {
		return coversAny(patterns, prefix, 0)
	}
	// sub is prefix followed by n "*" segments, for every n >= 1. Past the
	// length of the longest pattern, only patterns ending in "**" can
	// cover those, and then they cover all the longer ones alike: the
	// lengths up to there are the only ones to check.
	longest := 0
	for _, p := range patterns {
		longest = max(longest, countSegments(p))
	}
	for n := 1; ; n++ {
		if !coversAny(patterns, prefix, n) {
			return false
		}
		if prefix.count+n > longest {
			return true
		}
	}
}

// segments is the pattern a subscription is checked as: the segments of
// a prefix, then stars segments "*". None of them is a "**" wildcard: a
// "**" in the prefix is a literal segment.
type segments struct {
	rest     string // the prefix's segments still to come, when inPrefix
	inPrefix bool   // the prefix has a segment left (an empty one, maybe)
	stars    int    // the "*" segments left after the prefix
	count    int    // the prefix's number of segments
}

// openPrefix splits sub into its segments but a last "**", reporting
// whether it had one.
func openPrefix(sub string) (segments, bool) {
	switch {
	case sub == "**":
		return segments{}, true
	case strings.HasSuffix(sub, "/**"):
		p := sub[:len(sub)-len("/**")] // one segment at least, "" included
		return segments{rest: p, inPrefix: true, count: strings.Count(p, "/") + 1}, true
	default:
		return segments{rest: sub, inPrefix: sub != "", count: countSegments(sub)}, false
	}
}

// next returns the next segment, or false when there are none left.
func (s *segments) next() (string, bool) {
	if s.inPrefix {
		seg, rest, more := strings.Cut(s.rest, "/")
		s.rest, s.inPrefix = rest, more
		return seg, true
	}
	if s.stars > 0 {
		s.stars--
		return "*", true
	}
	return "", false
}

// more reports whether a segment is left.
func (s *segments) more() bool {
	return s.inPrefix || s.stars > 0
}

// coversAny reports whether one of patterns covers prefix followed by
// stars "*" segments.
func coversAny(patterns []string, prefix segments, stars int) bool {
	prefix.stars = stars
	for _, p := range patterns {
		if covers(p, prefix) {
			return true
		}
	}
	return false
}

// covers reports whether every topic that sub matches matches pattern.
// A literal segment of sub is covered by the same literal or by "*"; a
// "*" of sub only by "*"; the rest of sub (one segment or more) by a last
// "**".
func covers(pattern string, sub segments) bool {
	if pattern == "" {
		return !sub.more()
	}
	for {
		p, prest, pmore := strings.Cut(pattern, "/")
		s, ok := sub.next()
		if !ok {
			return false // sub's topics end where pattern wants more
		}
		if p == "**" && !pmore {
			return true
		}
		if p != "*" && (s == "*" || s != p) {
			return false
		}
		if !pmore {
			return !sub.more()
		}
		pattern = prest
	}
}

// countSegments returns the number of segments of a topic or pattern.
func countSegments(s string) int {
	if s == "" {
		return 0
	}
	return strings.Count(s, "/") + 1
}
