package patternset

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/access"
)

// checkIndex fails t unless x.Match(pattern) yields the topics of want
// (topic to value) that access.Match says pattern matches, each once.
func checkIndex(t testing.TB, x *Index[string], want map[string]string, pattern string) {
	t.Helper()
	var exp []string
	for topic, v := range want {
		if access.Match(pattern, topic) {
			exp = append(exp, v)
		}
	}
	slices.Sort(exp)
	var got []string
	if !x.Match(pattern, func(v string) bool { got = append(got, v); return true }) {
		t.Fatalf("Match(%q) reported a stop that nobody asked for", pattern)
	}
	slices.Sort(got)
	if !slices.Equal(got, exp) {
		t.Fatalf("Match(%q) = %q, want %q (topics %q)", pattern, got, exp, slices.Sorted(maps.Keys(want)))
	}
	if x.Len() != len(want) {
		t.Fatalf("Len %d, want %d", x.Len(), len(want))
	}
}

// TestIndexTable puts the topics of the table cases in one index and
// matches their patterns as access.Match does.
func TestIndexTable(t *testing.T) {
	var x Index[string]
	want := map[string]string{}
	for _, c := range cases {
		x.Put(c.topic, "v:"+c.topic)
		want[c.topic] = "v:" + c.topic
	}
	for _, c := range cases {
		checkIndex(t, &x, want, c.pattern)
		checkIndex(t, &x, want, c.topic) // a topic as a pattern
	}
}

// TestIndexRandom puts and deletes random topics, checking random
// patterns after each change, and that an emptied index holds no node.
func TestIndexRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(22, 2))
	for round := range 200 {
		var x Index[string]
		want := map[string]string{}
		for step := range 60 {
			topic := randomString(r)
			if _, ok := want[topic]; ok && r.IntN(2) == 0 {
				delete(want, topic)
				if !x.Delete(topic) {
					t.Fatalf("round %d step %d: Delete(%q) = false", round, step, topic)
				}
			} else {
				v := fmt.Sprint(topic, "#", step)
				if isNew := x.Put(topic, v); isNew == (want[topic] != "") {
					t.Fatalf("round %d step %d: Put(%q) = %v", round, step, topic, isNew)
				}
				want[topic] = v
			}
			if x.Delete(topic+"/absent") || x.Delete("absent") {
				t.Fatal("Delete of an absent topic reported true")
			}
			for range 8 {
				checkIndex(t, &x, want, randomString(r))
			}
			for topic, v := range want {
				if got, ok := x.Get(topic); !ok || got != v {
					t.Fatalf("Get(%q) = %q, %v; want %q", topic, got, ok, v)
				}
			}
		}
		for topic := range want {
			x.Delete(topic)
		}
		if x.Len() != 0 || x.Nodes() != 0 {
			t.Fatalf("round %d: emptied index has Len %d, %d nodes", round, x.Len(), x.Nodes())
		}
	}
}

// FuzzIndex checks Index.Match against access.Match on the topics of one
// line each of topics and a pattern, before and after deleting every
// other topic.
func FuzzIndex(f *testing.F) {
	for _, c := range cases {
		f.Add(c.topic+"\n"+c.pattern, c.pattern)
	}
	f.Add("a/b/c\na/b\na\n\na//b\n*/x", "a/**")
	f.Fuzz(func(t *testing.T, topics, pattern string) {
		lines := strings.Split(topics, "\n")
		if len(lines) > 64 {
			lines = lines[:64]
		}
		var x Index[string]
		want := map[string]string{}
		for i, topic := range lines {
			x.Put(topic, fmt.Sprint(i))
			want[topic] = fmt.Sprint(i)
		}
		checkIndex(t, &x, want, pattern)
		for i, topic := range lines {
			if i%2 == 0 {
				x.Delete(topic)
				delete(want, topic)
			}
		}
		checkIndex(t, &x, want, pattern)
	})
}

// TestIndexMatchStops: Match stops when yield returns false, and says so.
func TestIndexMatchStops(t *testing.T) {
	var x Index[int]
	for i := range 10 {
		x.Put(fmt.Sprint("a/", i), i)
	}
	for _, pattern := range []string{"a/*", "a/**", "**", "*/*"} {
		n := 0
		if x.Match(pattern, func(int) bool { n++; return n < 3 }) || n != 3 {
			t.Errorf("Match(%q) stopping at the third: went on to %d", pattern, n)
		}
	}
}

// BenchmarkIndexMatch finds the 10 topics of news/* among 1,000 and
// 100,000 topics other/<i>.
func BenchmarkIndexMatch(b *testing.B) {
	for _, others := range []int{1000, 100_000} {
		var x Index[int]
		for i := range others {
			x.Put(fmt.Sprint("other/", i), i)
		}
		for i := range 10 {
			x.Put(fmt.Sprint("news/", i), i)
		}
		b.Run(fmt.Sprintf("topics=%d", others), func(b *testing.B) {
			n := 0
			yield := func(int) bool { n++; return true }
			b.ReportAllocs()
			for b.Loop() {
				x.Match("news/*", yield)
			}
			if n != 10*b.N {
				b.Fatalf("%d matches in %d calls", n, b.N)
			}
		})
	}
}
