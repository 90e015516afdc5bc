package patternset

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/access"
)

// cases are patterns and topics, with whether they match as access.Match
// says (the table is checked against it, so that it cannot drift).
var cases = []struct {
	pattern, topic string
	match          bool
}{
	{"", "", true},
	{"", "a", false},
	{"a", "", false},
	{"*", "", false},
	{"**", "", false},
	{"a", "a", true},
	{"a", "b", false},
	{"a", "a/b", false},
	{"a/b", "a", false},
	{"*", "a", true},
	{"*", "a/b", false},
	{"*", "*", true},
	{"**", "a", true},
	{"**", "a/b/c", true},
	{"**", "/", true},
	{"a/*", "a/b", true},
	{"a/*", "a/", true},
	{"a/*", "a", false},
	{"a/*", "a/b/c", false},
	{"a/**", "a/b", true},
	{"a/**", "a/b/c", true},
	{"a/**", "a/", true},
	{"a/**", "a", false},
	{"a/**", "b/c", false},
	{"*/b", "a/b", true},
	{"*/b", "/b", true},
	{"*/b", "a/c", false},
	{"*/**", "a/b", true},
	{"*/**", "a", false},
	{"*/*/**", "a/b/c", true},
	{"*/*/**", "a/b", false},
	{"a/**/b", "a/**/b", true},
	{"a/**/b", "a/x/b", false},
	{"a/**/b", "a/x/y/b", false},
	{"a*b", "a*b", true},
	{"a*b", "axb", false},
	{"**b", "**b", true},
	{"**b", "ab", false},
	{"a/", "a/", true},
	{"a/", "a", false},
	{"a/", "a/b", false},
	{"/", "/", true},
	{"/", "", false},
	{"/a", "/a", true},
	{"a//b", "a//b", true},
	{"a/*/b", "a//b", true},
	{"a//**", "a//x", true},
	{"a//**", "a/x/y", false},
	{"**/**", "**/x", true},
	{"**/**", "a/x", false},
	{"*/", "a/", true},
	{"*/", "a", false},
	{"a/*", "a/*", true},
	{"a/b", "a/*", false},
}

// TestMatchTable matches each case alone in a set, and all of them in one
// set, as access.Match does.
func TestMatchTable(t *testing.T) {
	var all Set[int]
	for i, c := range cases {
		if got := access.Match(c.pattern, c.topic); got != c.match {
			t.Fatalf("the table is wrong: access.Match(%q, %q) = %v", c.pattern, c.topic, got)
		}
		var s Set[int]
		s.Add(c.pattern, i)
		if got := s.AppendMatches(nil, c.topic); (len(got) == 1) != c.match || len(got) > 1 {
			t.Errorf("set {%q}: topic %q matched %v, want match %v", c.pattern, c.topic, got, c.match)
		}
		all.Add(c.pattern, i)
	}
	for _, c := range cases {
		checkAgainstAccess(t, &all, c.topic)
	}
}

// reference is what a Set should hold: the pairs added, with counts.
type reference map[pair]int

type pair struct {
	pattern string
	v       int
}

// want returns the values whose patterns match topic, sorted, once per
// pair, as access.Match decides.
func (r reference) want(topic string) []int {
	var out []int
	for p := range r {
		if access.Match(p.pattern, topic) {
			out = append(out, p.v)
		}
	}
	slices.Sort(out)
	return out
}

// checkAgainstAccess fails t unless Match and AppendMatches on s yield
// for topic what access.Match says of s's patterns.
func checkAgainstAccess(t testing.TB, s *Set[int], topic string) {
	t.Helper()
	ref := make(reference)
	s.Patterns(func(p string, _ int) {
		for _, v := range patternValues(s, p) {
			ref[pair{p, v}] = 1
		}
	})
	checkAgainst(t, s, ref, topic)
}

// patternValues returns the values of pattern p in s, by looking them up
// in the trie.
func patternValues(s *Set[int], p string) []int {
	n := &s.root
	if p != "" {
		for {
			seg, rest, more := strings.Cut(p, "/")
			if seg == "**" && !more {
				return n.rest.appendTo(nil)
			}
			if seg == "*" {
				n = n.star
			} else {
				n = n.children[seg]
			}
			if n == nil {
				return nil
			}
			if !more {
				break
			}
			p = rest
			if p == "" {
				if n = n.children[""]; n == nil {
					return nil
				}
				break
			}
		}
	}
	return n.end.appendTo(nil)
}

// checkAgainst fails t unless Match and AppendMatches on s yield for
// topic what ref says.
func checkAgainst(t testing.TB, s *Set[int], ref reference, topic string) {
	t.Helper()
	want := ref.want(topic)
	var got []int
	s.Match(topic, func(v int) { got = append(got, v) })
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Match(%q) = %v, want %v (patterns %v)", topic, got, want, sortedPatterns(ref))
	}
	got = s.AppendMatches(got[:0], topic)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("AppendMatches(%q) = %v, want %v", topic, got, want)
	}
}

func sortedPatterns(ref reference) []string {
	var out []string
	for p := range ref {
		out = append(out, fmt.Sprintf("%q:%d", p.pattern, p.v))
	}
	slices.Sort(out)
	return out
}

// segs are the segments random patterns and topics are made of: the
// wildcards, literals that look like them, and the empty segment.
var segs = []string{"a", "b", "", "*", "**", "a*", "*a", "***", "x/y"}

// randomString joins 0 to 4 random segments.
func randomString(r *rand.Rand) string {
	n := r.IntN(5)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = segs[r.IntN(len(segs))]
	}
	return strings.Join(parts, "/")
}

// TestMatchRandom adds and removes random (pattern, value) pairs and
// checks, after each change, that random topics match in the set as
// access.Match says, with the counts of Len and a set emptied to nothing.
func TestMatchRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(22, 1))
	for round := range 200 {
		var s Set[int]
		ref := make(reference)
		var added []pair
		for step := range 60 {
			if len(added) > 0 && r.IntN(3) == 0 {
				i := r.IntN(len(added))
				p := added[i]
				added = slices.Delete(added, i, i+1)
				wantGone := ref[p] == 1
				if ref[p]--; ref[p] == 0 {
					delete(ref, p)
				}
				if gone := s.Remove(p.pattern, p.v); gone != wantGone {
					t.Fatalf("round %d step %d: Remove(%q, %d) = %v, want %v", round, step, p.pattern, p.v, gone, wantGone)
				}
			} else {
				p := pair{randomString(r), r.IntN(4)}
				if isNew := s.Add(p.pattern, p.v); isNew != (ref[p] == 0) {
					t.Fatalf("round %d step %d: Add(%q, %d) = %v, want %v", round, step, p.pattern, p.v, isNew, ref[p] == 0)
				}
				ref[p]++
				added = append(added, p)
			}
			if s.Len() != len(ref) {
				t.Fatalf("round %d step %d: Len %d, want %d", round, step, s.Len(), len(ref))
			}
			for range 8 {
				checkAgainst(t, &s, ref, randomString(r))
			}
			for p := range ref { // every pattern's own text, as a topic
				checkAgainst(t, &s, ref, p.pattern)
			}
		}
		for _, p := range added {
			s.Remove(p.pattern, p.v)
		}
		if s.Len() != 0 || s.Nodes() != 0 || !s.root.empty() {
			t.Fatalf("round %d: emptied set has Len %d, %d nodes", round, s.Len(), s.Nodes())
		}
	}
}

// FuzzMatch checks the set against access.Match on the patterns of one
// line each of patterns and a topic, before and after removing every
// other pattern.
func FuzzMatch(f *testing.F) {
	for _, c := range cases {
		f.Add(c.pattern, c.topic)
	}
	f.Add("a/**\n*/b\n**\n\na/*/c", "a/b/c")
	f.Add("*/*\n*/**\n**/*\na/**/b", "a/**/b")
	f.Add("x\nx\nx/**\n*", "x")
	f.Fuzz(func(t *testing.T, patterns, topic string) {
		lines := strings.Split(patterns, "\n")
		if len(lines) > 64 {
			lines = lines[:64]
		}
		var s Set[int]
		ref := make(reference)
		for i, p := range lines {
			s.Add(p, i%5) // values shared between patterns
			ref[pair{p, i % 5}]++
		}
		checkAgainst(t, &s, ref, topic)
		for i, p := range lines {
			if i%2 == 0 {
				k := pair{p, i % 5}
				s.Remove(p, k.v)
				if ref[k]--; ref[k] == 0 {
					delete(ref, k)
				}
			}
		}
		checkAgainst(t, &s, ref, topic)
	})
}

// TestAddRemoveCounts: a pair added twice is one pair, matched once,
// until removed twice; removing what is not there changes nothing.
func TestAddRemoveCounts(t *testing.T) {
	var s Set[string]
	if !s.Add("a/*", "x") || s.Add("a/*", "x") || !s.Add("a/**", "x") {
		t.Fatal("Add reported wrong novelty")
	}
	var got []string
	s.Match("a/b", func(v string) { got = append(got, v) })
	if len(got) != 2 || s.Len() != 2 {
		t.Fatalf("got %v, Len %d; want x twice (two patterns), Len 2", got, s.Len())
	}
	if s.Remove("a/*", "y") || s.Remove("b/*", "x") || s.Remove("a", "x") || s.Remove("a/*/c", "x") {
		t.Fatal("removing an absent pair reported true")
	}
	if s.Remove("a/*", "x") || !s.Remove("a/*", "x") || s.Remove("a/*", "x") {
		t.Fatal("Remove of a pair added twice: want false, true, false")
	}
	if got := s.AppendMatches(nil, "a/b"); len(got) != 1 || s.Len() != 1 {
		t.Fatalf("got %v, Len %d after removing a/*; want [x], 1", got, s.Len())
	}
	s.Remove("a/**", "x")
	if s.Len() != 0 || s.Nodes() != 0 {
		t.Fatalf("emptied set: Len %d, %d nodes", s.Len(), s.Nodes())
	}
}

// TestManyValuesOnePattern: a pattern followed by many values (indexed
// by a map) adds, matches and removes them all, in any order.
func TestManyValuesOnePattern(t *testing.T) {
	var s Set[int]
	const n = 1000
	for i := range n {
		s.Add("news/**", i)
	}
	got := s.AppendMatches(nil, "news/x")
	slices.Sort(got)
	if len(got) != n || got[0] != 0 || got[n-1] != n-1 {
		t.Fatalf("%d values matched, want %d", len(got), n)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i, v := range r.Perm(n) {
		if !s.Remove("news/**", v) {
			t.Fatalf("Remove of value %d failed", v)
		}
		if i%97 == 0 {
			if got := len(s.AppendMatches(nil, "news/x")); got != n-i-1 {
				t.Fatalf("after %d removals, %d values match, want %d", i+1, got, n-i-1)
			}
		}
	}
	if s.Len() != 0 || s.Nodes() != 0 {
		t.Fatalf("emptied set: Len %d, %d nodes", s.Len(), s.Nodes())
	}
}

// TestPatterns: Patterns lists every pattern held, with its values.
func TestPatterns(t *testing.T) {
	var s Set[int]
	want := map[string]int{"": 1, "**": 1, "a": 2, "a/": 1, "/": 1, "*/b": 1, "a/**": 1, "a/**/b": 1, "*": 1}
	for p, n := range want {
		for v := range n {
			s.Add(p, v)
		}
	}
	got := map[string]int{}
	s.Patterns(func(p string, n int) { got[p] = n })
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Patterns: %v, want %v", got, want)
	}
}

// TestIsPattern: a pattern is one with a "*" or a last "**" segment.
func TestIsPattern(t *testing.T) {
	for p, want := range map[string]bool{
		"": false, "a": false, "a*b": false, "a/**/b": false, "**a": false, "a/": false,
		"*": true, "**": true, "a/*": true, "a/**": true, "*/b": true, "a/**/*": true,
	} {
		if got := IsPattern(p); got != want {
			t.Errorf("IsPattern(%q) = %v, want %v", p, got, want)
		}
		// a non-pattern matches only itself
		if !want && !access.Match(p, p) {
			t.Errorf("%q does not match itself", p)
		}
	}
}

// TestMatchDoesNotAllocate: Match, and AppendMatches into a slice with
// room, allocate nothing.
func TestMatchDoesNotAllocate(t *testing.T) {
	s := benchSet(1000, 10)
	sum := 0
	yield := func(v int) { sum += v }
	buf := make([]int, 0, 64)
	for _, topic := range []string{"news/sport/1", "other/5/x", "", "a/b/c/d/e/f", "news/x"} {
		if n := testing.AllocsPerRun(100, func() { s.Match(topic, yield) }); n != 0 {
			t.Errorf("Match(%q): %v allocations", topic, n)
		}
		if n := testing.AllocsPerRun(100, func() { buf = s.AppendMatches(buf[:0], topic) }); n != 0 {
			t.Errorf("AppendMatches(%q): %v allocations", topic, n)
		}
	}
}

// benchSet returns a set of others patterns other/<i>/** and matching
// patterns that match topics news/sport/<n>: news/**, news/*/*, */sport/**,
// news/sport/*, and more of news/sport/**, each with one value.
func benchSet(others, matching int) *Set[int] {
	var s Set[int]
	for i := range others {
		s.Add(fmt.Sprintf("other/%d/**", i), i)
	}
	shapes := []string{"news/**", "news/*/*", "*/sport/**", "news/sport/*", "news/sport/**"}
	for i := range matching {
		s.Add(shapes[i%len(shapes)], others+i)
	}
	return &s
}

// BenchmarkMatch matches a topic against sets of 0, 1,000 and 100,000
// patterns on other prefixes, with none or 10 or 100 that match.
func BenchmarkMatch(b *testing.B) {
	for _, others := range []int{0, 1000, 100_000} {
		for _, matching := range []int{0, 10, 100} {
			s := benchSet(others, matching)
			b.Run(fmt.Sprintf("others=%d/matching=%d", others, matching), func(b *testing.B) {
				n := 0
				yield := func(int) { n++ }
				b.ReportAllocs()
				for b.Loop() {
					s.Match("news/sport/42", yield)
				}
				if n != matching*b.N && b.N > 0 {
					b.Fatalf("%d matches in %d calls, want %d each", n, b.N, matching)
				}
			})
		}
	}
}

// BenchmarkAppendMatches is BenchmarkMatch through AppendMatches.
func BenchmarkAppendMatches(b *testing.B) {
	for _, others := range []int{0, 1000, 100_000} {
		s := benchSet(others, 10)
		b.Run(fmt.Sprintf("others=%d/matching=10", others), func(b *testing.B) {
			buf := make([]int, 0, 16)
			b.ReportAllocs()
			for b.Loop() {
				buf = s.AppendMatches(buf[:0], "news/sport/42")
			}
		})
	}
}

// BenchmarkMatchAccessLoop is what the set replaces: access.Match against
// every pattern, for 1,000 patterns on other prefixes.
func BenchmarkMatchAccessLoop(b *testing.B) {
	patterns := make([]string, 1000)
	for i := range patterns {
		patterns[i] = fmt.Sprintf("other/%d/**", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range patterns {
			if access.Match(p, "news/sport/42") {
				b.Fatal("matched")
			}
		}
	}
}

// BenchmarkAddRemove adds and removes a pattern subscription in a set of
// 100,000 others.
func BenchmarkAddRemove(b *testing.B) {
	s := benchSet(100_000, 10)
	b.ReportAllocs()
	for b.Loop() {
		s.Add("news/sport/*", -1)
		s.Remove("news/sport/*", -1)
	}
}
