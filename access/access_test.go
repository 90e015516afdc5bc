package access

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, topic string
		want           bool
	}{
		// Literal patterns match the topic equal to them.
		{"news", "news", true},
		{"news", "new", false},
		{"news", "news/x", false},
		{"news/x", "news", false},
		{"a/b/c", "a/b/c", true},
		{"a/b/c", "a/b/d", false},
		// "*" matches exactly one segment.
		{"news/*", "news/x", true},
		{"news/*", "news", false},
		{"news/*", "news/x/y", false},
		{"*/x", "a/x", true},
		{"*/x", "a/y", false},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/b/c", false},
		{"*/*", "a/b", true},
		{"*/*", "a", false},
		{"*", "a", true},
		{"*", "a/b", false},
		{"*", "", false},
		// "**" last matches one segment or more.
		{"news/**", "news/x", true},
		{"news/**", "news/x/y/z", true},
		{"news/**", "news", false},
		{"news/**", "newsx/y", false},
		{"**", "a", true},
		{"**", "a/b/c", true},
		{"**", "/", true},
		{"**", "", false},
		{"a/*/**", "a/b", false},
		{"a/*/**", "a/b/c", true},
		// A "*" or "**" inside a segment is literal.
		{"a*b", "a*b", true},
		{"a*b", "axb", false},
		{"news/x*", "news/x1", false},
		{"news/**x", "news/a/x", false},
		{"news/x**", "news/x**", true},
		// "**" not last is a literal segment.
		{"a/**/b", "a/x/b", false},
		{"a/**/b", "a/x/y/b", false},
		{"a/**/b", "a/**/b", true},
		{"**/b", "a/b", false},
		// Empty segments are segments; the empty topic has none.
		{"a//b", "a//b", true},
		{"a/*/b", "a//b", true},
		{"a//b", "a/b", false},
		{"a/*", "a/", true},
		{"a/", "a/", true},
		{"a/", "a", false},
		{"a", "a/", false},
		{"a/**", "a/", true},
		{"a/**", "a//", true},
		{"/a", "/a", true},
		{"*/a", "/a", true},
		{"/", "/", true},
		{"*", "/", false},
		{"*/*", "/", true},
		{"", "", true},
		{"", "a", false},
		{"a", "", false},
		// Other characters are literal.
		{"a+b/#", "a+b/#", true},
		{"a+/#", "ab/x", false},
		{"a.b", "a.b", true},
		{"a.b", "axb", false},
		{"a?", "ab", false},
		{"[ab]", "a", false},
		{"ümlaut/*", "ümlaut/ß", true},
		{"News", "news", false},
	} {
		if got := Match(tc.pattern, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.topic, got, tc.want)
		}
	}
}

func TestMatchAny(t *testing.T) {
	patterns := []string{"news/*", "users/42/**"}
	for topic, want := range map[string]bool{
		"news/x":        true,
		"users/42/a/b":  true,
		"users/43/a":    false,
		"news/x/y":      false,
		"weather/today": false,
	} {
		if got := MatchAny(patterns, topic); got != want {
			t.Errorf("MatchAny(%q, %q) = %v, want %v", patterns, topic, got, want)
		}
	}
	if MatchAny(nil, "a") {
		t.Error("MatchAny(nil, \"a\") = true")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	patterns := []string{"a/b", "news/*/x", "users/*/**"}
	allocs := testing.AllocsPerRun(100, func() {
		Match("users/*/**", "users/42/inbox/x")
		Match("a/**/b", "a/**/b")
		MatchAny(patterns, "users/7/x/y")
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times", allocs)
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		sub      string
		want     bool
	}{
		// Topics: as MatchAny.
		{[]string{"news/*"}, "news/x", true},
		{[]string{"news/*"}, "news/x/y", false},
		{[]string{"news/**"}, "news/x/y", true},
		{[]string{"a", "b"}, "b", true},
		{nil, "a", false},
		// Patterns.
		{[]string{"news/**"}, "news/*", true},
		{[]string{"news/**"}, "news/**", true},
		{[]string{"news/**"}, "news/*/x/**", true},
		{[]string{"news/*"}, "news/**", false},
		{[]string{"news/*"}, "news/*", true},
		{[]string{"a/*/c"}, "a/*/c", true},
		{[]string{"a/*/c"}, "a/b/c", true},
		{[]string{"a/b/c"}, "a/*/c", false},
		{[]string{"*/x"}, "a/*", false},
		{[]string{"*/*"}, "a/*", true},
		{[]string{"**"}, "**", true},
		{[]string{"**"}, "a/*/**", true},
		{[]string{"*"}, "**", false},
		{[]string{"*/**"}, "**", false},
		{[]string{"*", "*/**"}, "**", true},
		{[]string{"a/*", "a/*/**"}, "a/**", true},
		{[]string{"a/*", "a/*/*/**"}, "a/**", false},
		{[]string{"a/*", "a/*/*", "a/*/*/**"}, "a/**", true},
		{[]string{"a/x/**", "a/y/**"}, "a/*/z", false},
		{[]string{"a/*/z"}, "a/x/z", true},
		{[]string{"news/**"}, "news", false},
		{[]string{"news/**"}, "**", false},
		// Literal "*" inside segments, "**" not last.
		{[]string{"a*"}, "a*", true},
		{[]string{"a*"}, "ab", false},
		{[]string{"*"}, "a*", true},
		{[]string{"a/**/b"}, "a/**/b", true},
		{[]string{"a/*/b"}, "a/**/b", true},
		{[]string{"a/**/b"}, "a/*/b", false},
		{[]string{"a/**"}, "a/**/**", true},
		{[]string{"a/*/*"}, "a/**/**", false},
		{[]string{"a/**/*"}, "a/**/**", false},
		// Empty segments and the empty topic.
		{[]string{"a/*"}, "a/", true},
		{[]string{"a/**"}, "a//**", true},
		{[]string{"*/**"}, "/**", true},
		{[]string{"/*"}, "/**", false},
		{[]string{"/*", "/*/**"}, "/**", true},
		{[]string{""}, "", true},
		{[]string{"**"}, "", false},
		{[]string{"*"}, "", false},
		{[]string{""}, "*", false},
		{[]string{""}, "**", false},
	} {
		if got := Covers(tc.patterns, tc.sub); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.patterns, tc.sub, got, tc.want)
		}
	}
}

// TestCoversByEnumeration checks Covers against its definition on random
// patterns: every topic sub matches matches one of patterns. Topics are
// enumerated up to a length past the longest pattern, their segments
// among the literals of the patterns and one that none has (as good as
// any other, for a "*").
func TestCoversByEnumeration(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	segments := []string{"a", "b", "", "*", "**", "*", "**"}
	pattern := func() string {
		n := rng.IntN(4)
		segs := make([]string, n)
		for i := range segs {
			segs[i] = segments[rng.IntN(len(segments))]
		}
		return strings.Join(segs, "/")
	}
	alphabet := []string{"a", "b", "", "**", "fresh"}
	covered := 0
	for range 3000 {
		patterns := make([]string, 1+rng.IntN(3))
		for i := range patterns {
			patterns[i] = pattern()
		}
		sub := pattern()
		longest := countSegments(sub)
		for _, p := range patterns {
			longest = max(longest, countSegments(p))
		}
		want := true
		for _, topic := range topicsUpTo(alphabet, longest+1) {
			if Match(sub, topic) && !MatchAny(patterns, topic) {
				want = false
				break
			}
		}
		if got := Covers(patterns, sub); got != want {
			t.Fatalf("Covers(%q, %q) = %v, want %v", patterns, sub, got, want)
		}
		if want {
			covered++
		}
	}
	if covered < 300 || covered > 2700 {
		t.Errorf("%d of 3000 random cases covered: too one-sided to test much", covered)
	}
}

// topicsUpTo returns every topic of up to n segments from alphabet.
func topicsUpTo(alphabet []string, n int) []string {
	topics := []string{""} // no segment
	level := [][]string{{}}
	for range n {
		var next [][]string
		for _, segs := range level {
			for _, seg := range alphabet {
				next = append(next, append(segs[:len(segs):len(segs)], seg))
			}
		}
		for _, segs := range next {
			if topic := strings.Join(segs, "/"); topic != "" { // not one empty segment
				topics = append(topics, topic)
			}
		}
		level = next
	}
	return topics
}

func TestCoversTopicsIsMatchAny(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	segments := []string{"a", "b", "", "*", "**", "x*"}
	topicSegs := []string{"a", "b", "", "x*", "c"}
	join := func(from []string, n int) string {
		segs := make([]string, n)
		for i := range segs {
			segs[i] = from[rng.IntN(len(from))]
		}
		return strings.Join(segs, "/")
	}
	for range 5000 {
		patterns := []string{join(segments, rng.IntN(4)), join(segments, rng.IntN(4))}
		topic := join(topicSegs, rng.IntN(4))
		if got, want := Covers(patterns, topic), MatchAny(patterns, topic); got != want {
			t.Fatalf("Covers(%q, %q) = %v, MatchAny = %v", patterns, topic, got, want)
		}
	}
}
