package caddysse

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// got is an event as a parser handed it to its sink.
type got struct {
	topics []string
	typ    string
	data   string
	retry  int64
}

func (g got) String() string {
	return fmt.Sprintf("{topics %q type %q data %q retry %d}", g.topics, g.typ, g.data, g.retry)
}

// recorder is an eventSink that keeps what it is given.
type recorder struct{ events []got }

func (r *recorder) event(ev *ingestEvent) error {
	r.events = append(r.events, got{topics: slices.Clone(ev.topics), typ: string(ev.typ), data: string(ev.data), retry: ev.retry})
	return nil
}

// chunkReader returns one chunk per Read, then end (io.EOF if nil).
type chunkReader struct {
	chunks []string
	end    error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		if c.end != nil {
			return 0, c.end
		}
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if n == len(c.chunks[0]) {
		c.chunks = c.chunks[1:]
	} else {
		c.chunks[0] = c.chunks[0][n:]
	}
	return n, nil
}

// parseChunks reads a stream that arrives in chunks and ends with end
// (nil: the body's end), through a ingestReader, as ingest does:
// with a small buffer to begin with (so that it grows) and with a large
// one, which must give the same.
func parseChunks(format ingestFormat, maxSize int, chunks []string, end error) ([]got, error) {
	small, err := parseChunksWith(8, format, maxSize, chunks, end)
	large, errLarge := parseChunksWith(streamBufferSize, format, maxSize, chunks, end)
	if !slices.EqualFunc(small, large, equalGot) || fmt.Sprint(err) != fmt.Sprint(errLarge) {
		panic(fmt.Sprintf("%q: read with a small buffer: %v %v; with a large one: %v %v", chunks, small, err, large, errLarge))
	}
	return small, err
}

// parseChunksWith is parseChunks with a buffer of bufSize to begin with.
func parseChunksWith(bufSize int, format ingestFormat, maxSize int, chunks []string, end error) ([]got, error) {
	rec := new(recorder)
	sr := newIngestReader(format, make([]byte, bufSize), rec, maxSize)
	cr := &chunkReader{chunks: slices.Clone(chunks), end: end}
	var readErr error
	for range 1 << 20 {
		if err := sr.parse(readErr == io.EOF, func() error { return nil }); err != nil {
			return rec.events, err
		}
		if readErr != nil {
			return rec.events, nil
		}
		_, readErr = sr.fill(cr)
	}
	panic("the stream never ended")
}

// splits returns s whole, byte by byte, and cut in two at every place.
func splits(s string) [][]string {
	out := [][]string{{s}}
	var bytewise []string
	for i := range len(s) {
		bytewise = append(bytewise, s[i:i+1])
	}
	out = append(out, bytewise)
	for i := 1; i < len(s); i++ {
		out = append(out, []string{s[:i], s[i:]})
	}
	return out
}

// ev is an expected event of the default type, topics and retry.
func ev(data string) got { return got{data: data, retry: -1} }

func TestEventStreamParser(t *testing.T) {
	typed := func(typ, data string) got { return got{typ: typ, data: data, retry: -1} }
	cases := []struct {
		name, in string
		want     []got
	}{
		{"one event", "data: a\n\n", []got{ev("a")}},
		{"no space after the colon", "data:a\n\n", []got{ev("a")}},
		{"only one space is dropped", "data:  a \n\n", []got{ev(" a ")}},
		{"a field without a colon", "data\n\n", []got{ev("")}},
		{"an empty data line", "data:\n\n", []got{ev("")}},
		{"data lines are joined with LF", "data: a\ndata:\ndata: b\n\n", []got{ev("a\n\nb")}},
		{"CRLF", "data: a\r\ndata: b\r\n\r\n", []got{ev("a\nb")}},
		{"lone CRs", "data: a\rdata: b\r\rdata: c\r\r", []got{ev("a\nb"), ev("c")}},
		{"mixed endings", "data: a\r\ndata: b\rdata: c\n\r\n", []got{ev("a\nb\nc")}},
		{"an LF after a CR LF is a blank line", "data: a\r\n\n", []got{ev("a")}},
		{"blank lines between events", "\n\ndata: a\n\n\n\r\ndata: b\n\n\n", []got{ev("a"), ev("b")}},
		{"a comment", ": hello\ndata: a\n: there\n\n:\n\n", []got{ev("a")}},
		{"a block without data is not dispatched", "event: e\nretry: 1000\n\n", nil},
		{"its type does not leak into the next", "event: e\n\ndata: x\n\n", []got{ev("x")}},
		{"event", "event: update\ndata: x\n\n", []got{typed("update", "x")}},
		{"the last event line wins", "event: a\nevent: b\ndata: x\n\n", []got{typed("b", "x")}},
		{"an empty event names none", "event:\ndata: x\n\n", []got{ev("x")}},
		{"types do not carry over", "event: e\ndata: 1\n\ndata: 2\n\n", []got{typed("e", "1"), ev("2")}},
		{"retry", "retry: 5000\ndata: x\n\ndata: y\n\n", []got{{data: "x", retry: 5000}, ev("y")}},
		{"retry bounds", "retry: 100\ndata: x\n\nretry: 86400000\ndata: y\n\n", []got{{data: "x", retry: 100}, {data: "y", retry: 86400000}}},
		{"retry not all digits is ignored", "retry: 5s\ndata: x\n\nretry: -100\ndata: y\n\nretry: \ndata: z\n\nretry\ndata: w\n\n",
			[]got{ev("x"), ev("y"), ev("z"), ev("w")}},
		{"id is ignored", "id: 42\ndata: x\n\nid\ndata: y\n\n", []got{ev("x"), ev("y")}},
		{"unknown fields are ignored", "foo: bar\nDATA: no\nData: no\n data: no\ndata: x\n\n", []got{ev("x")}},
		{"a BOM at the start", "\xEF\xBB\xBFdata: x\n\n", []got{ev("x")}},
		{"only one BOM", "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n", []got{ev("y")}},
		{"a BOM in data is data", "data: \xEF\xBB\xBFx\n\n", []got{ev("\uFEFFx")}},
		{"NUL, U+2028 and U+0085 in data", "data: a\x00b\u2028c\u0085d\n\n", []got{ev("a\x00b\u2028c\u0085d")}},
		{"colons in the value", "data: a: b:c\n\n", []got{ev("a: b:c")}},
		{"an incomplete block is dropped", "data: a\n\ndata: b\n", []got{ev("a")}},
		{"an incomplete line is dropped", "data: a\n\ndata: b", []got{ev("a")}},
		{"a final CR ends its line", "data: a\n\r", []got{ev("a")}},
		{"nothing", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, chunks := range splits(c.in) {
				events, err := parseChunks(eventStream, 1<<10, chunks, nil)
				if err != nil {
					t.Fatalf("chunks %q: %v", chunks, err)
				}
				if !slices.EqualFunc(events, c.want, equalGot) {
					t.Fatalf("chunks %q: got %v, want %v", chunks, events, c.want)
				}
			}
		})
	}
}

func equalGot(a, b got) bool {
	return slices.Equal(a.topics, b.topics) && a.typ == b.typ && a.data == b.data && a.retry == b.retry
}

// TestStreamBrokenOff: a body that breaks off publishes its complete
// events only, in both formats; an ndjson body that ends whole has its
// last line read even without its LF.
func TestStreamBrokenOff(t *testing.T) {
	broken := errors.New("connection reset")
	for _, c := range []struct {
		format ingestFormat
		in     string
		end    error
		want   []got
	}{
		{eventStream, "data: a\n\ndata: b\n", broken, []got{ev("a")}},
		{eventStream, "data: a\n\ndata: b\n", nil, []got{ev("a")}},
		{ndjson, `{"data":"a"}` + "\n" + `{"data":"b"}`, broken, []got{ev("a")}},
		{ndjson, `{"data":"a"}` + "\n" + `{"da`, broken, []got{ev("a")}},
		{ndjson, `{"data":"a"}` + "\n" + `{"data":"b"}`, nil, []got{ev("a"), ev("b")}},
		{ndjson, `{"data":"a"}` + "\n  \t", nil, []got{ev("a")}},
	} {
		for _, chunks := range splits(c.in) {
			events, err := parseChunks(c.format, 1<<10, chunks, c.end)
			if err != nil || !slices.EqualFunc(events, c.want, equalGot) {
				t.Fatalf("%s %q ending with %v: got %v, %v; want %v", c.format, chunks, c.end, events, err, c.want)
			}
		}
	}
}

func TestNDJSONParser(t *testing.T) {
	cases := []struct {
		name, in string
		want     []got
	}{
		{"data only", `{"data":"a"}` + "\n", []got{ev("a")}},
		{"every field", `{"topic":"t","event":"e","data":{"x": [1, 2]},"retry":1000}` + "\n",
			[]got{{topics: []string{"t"}, typ: "e", data: `{"x":[1,2]}`, retry: 1000}}},
		{"topics and type", `{"topic":["a","b"],"type":"t","data":"x"}` + "\n",
			[]got{{topics: []string{"a", "b"}, typ: "t", data: "x", retry: -1}}},
		{"blank lines", "\n  \n" + `{"data":"a"}` + "\r\n\t\r\n" + `{"data":"b"}` + "\n\n", []got{ev("a"), ev("b")}},
		{"CRLF", `{"data":"a"}` + "\r\n" + `{"data":"b"}` + "\r\n", []got{ev("a"), ev("b")}},
		{"escapes", `{"data":"line\nbreak \u00e9 \ud83c\udf89"}` + "\n", []got{ev("line\nbreak é 🎉")}},
		{"no data", `{}` + "\n", []got{ev("")}},
		{"null data is the string null", `{"data":null}` + "\n", []got{ev("null")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, chunks := range splits(c.in) {
				events, err := parseChunks(ndjson, 1<<10, chunks, nil)
				if err != nil {
					t.Fatalf("chunks %q: %v", chunks, err)
				}
				if !slices.EqualFunc(events, c.want, equalGot) {
					t.Fatalf("chunks %q: got %v, want %v", chunks, events, c.want)
				}
			}
		})
	}
}

func TestStreamParserRefusals(t *testing.T) {
	cases := []struct {
		name    string
		format  ingestFormat
		maxSize int
		in      string
		events  int // before the refusal
		line    int
		status  int
		msg     string
	}{
		{"data not UTF-8", eventStream, 64, "data: a\n\ndata: \xff\n\n", 1, 3, 400, "data is not valid UTF-8"},
		{"event type with NUL", eventStream, 64, "event: a\x00b\ndata: x\n\n", 0, 1, 400, "contains CR, LF or NUL"},
		{"event type not UTF-8", eventStream, 64, "event: \xfe\ndata: x\n\n", 0, 1, 400, "not valid UTF-8"},
		{"retry too small", eventStream, 64, "data: a\n\nretry: 99\ndata: x\n\n", 1, 3, 400, "retry 99 is not allowed"},
		{"retry too large", eventStream, 64, "retry: 86400001\ndata: x\n\n", 0, 1, 400, "from 100 to 86400000"},
		{"retry far too large", eventStream, 64, "retry: 99999999999999999999999\n", 0, 1, 400, "retry 99999999999999999999999 is not allowed"},
		{"data over max_size", eventStream, 10, "data: 0123456789\n\ndata: 01234567890\n\n", 1, 3, 413, "larger than the 10 bytes allowed (max_size)"},
		{"joined data over max_size", eventStream, 10, "data: 01234\ndata: 01234\n\n", 0, 2, 413, "larger than the 10 bytes"},
		{"a comment line too long", eventStream, 10, ": " + strings.Repeat("c", 30) + "\n", 0, 1, 413, "the line is longer than the 26 bytes allowed"},
		{"an unended line too long", eventStream, 10, "data: a\n\n" + strings.Repeat("c", 27), 1, 3, 413, "the line is longer"},
		{"a supplied id", ndjson, 64, `{"data":"a"}` + "\n" + `{"id":"1","data":"x"}` + "\n", 1, 2, 400, "event ids are assigned by the hub"},
		{"an unknown field", ndjson, 64, `{"topics":"x"}` + "\n", 0, 1, 400, `unknown field "topics"`},
		{"not JSON", ndjson, 64, "\n\nhello\n", 0, 3, 400, "malformed JSON"},
		{"two values on a line", ndjson, 64, `{"data":"a"} {"data":"b"}` + "\n", 0, 1, 400, "unexpected data after the JSON value"},
		{"a lone CR does not end a line", ndjson, 64, `{"data":"a"}` + "\r" + `{"data":"b"}` + "\n", 0, 1, 400, "unexpected data after"},
		{"null", ndjson, 64, "null\n", 0, 1, 400, "the line is null"},
		{"an array", ndjson, 64, `[{"data":"a"}]` + "\n", 0, 1, 400, "not a JSON object"},
		{"not UTF-8", ndjson, 64, "{\"data\":\"\xff\"}\n", 0, 1, 400, "not valid UTF-8"},
		{"an empty topic array", ndjson, 64, `{"topic":[]}` + "\n", 0, 1, 400, "topic is an empty array"},
		{"a bad retry", ndjson, 64, `{"retry":5}` + "\n", 0, 1, 400, "retry 5 is not allowed"},
		{"a line too long", ndjson, 20, `{"data":"0123456789abcdef"}` + "\n", 0, 1, 413, "the line is longer than the 20 bytes allowed"},
		{"a bad last line", ndjson, 64, `{"data":"a"}` + "\n" + `{"data":`, 1, 2, 400, "malformed JSON: the body ends too soon"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, chunks := range splits(c.in) {
				events, err := parseChunks(c.format, c.maxSize, chunks, nil)
				var le *lineError
				if !errors.As(err, &le) {
					t.Fatalf("chunks %q: events %v, error %v; want a refusal at line %d", chunks, events, err, c.line)
				}
				re := parseRefusal(le.err) // as the handler answers it
				if len(events) != c.events || le.line != c.line || re.status != c.status || !strings.Contains(re.msg, c.msg) {
					t.Fatalf("chunks %q: %d events, line %d, %d %q; want %d events, line %d, %d %q",
						chunks, len(events), le.line, re.status, re.msg, c.events, c.line, c.status, c.msg)
				}
			}
		})
	}
}

// TestEventStreamRoundTrip writes random events as text/event-stream with
// random line endings, comments and ignored fields, cuts the stream at
// random places, and parses it back.
func TestEventStreamRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "b", " ", ":", "é", "日本", "🎉", "\x00", "\u2028", "data: ", "id", "\uFEFF"}
	endings := []string{"\n", "\r\n", "\r"}
	for round := range 500 {
		var in strings.Builder
		var want []got
		for range rng.IntN(8) {
			e := got{retry: -1}
			if rng.IntN(3) == 0 {
				e.typ = "t" + fmt.Sprint(rng.IntN(3))
				fmt.Fprintf(&in, "event: %s%s", e.typ, endings[rng.IntN(3)])
			}
			if rng.IntN(4) == 0 {
				e.retry = 100 + rng.Int64N(100000)
				fmt.Fprintf(&in, "retry: %d%s", e.retry, endings[rng.IntN(3)])
			}
			lines := 1 + rng.IntN(3)
			var data []string
			for l := range lines {
				var line strings.Builder
				for range rng.IntN(6) {
					line.WriteString(pieces[rng.IntN(len(pieces))])
				}
				data = append(data, line.String())
				if rng.IntN(3) == 0 {
					fmt.Fprintf(&in, ": comment %d%s", l, endings[rng.IntN(3)])
				}
				if rng.IntN(4) == 0 {
					fmt.Fprintf(&in, "id: %d%s", l, endings[rng.IntN(3)])
				}
				fmt.Fprintf(&in, "data: %s%s", line.String(), endings[rng.IntN(3)])
			}
			e.data = strings.Join(data, "\n")
			blank := endings[rng.IntN(3)]
			if blank == "\n" && strings.HasSuffix(in.String(), "\r") {
				blank = "\r" // CR then LF would be one line ending
			}
			in.WriteString(blank)
			want = append(want, e)
		}
		s := in.String()
		var chunks []string
		for s != "" {
			n := min(len(s), 1+rng.IntN(12))
			chunks = append(chunks, s[:n])
			s = s[n:]
		}
		events, err := parseChunks(eventStream, 1<<10, chunks, nil)
		if err != nil || !slices.EqualFunc(events, want, equalGot) {
			t.Fatalf("round %d: %q\ngot %v, %v\nwant %v", round, chunks, events, err, want)
		}
	}
}

// FuzzEventStream checks that a text/event-stream gives the same events,
// or the same refusal, however it is cut into reads.
func FuzzEventStream(f *testing.F) {
	f.Add("data: a\r\n\r\nevent: e\rdata: b\r\r", uint8(3))
	f.Add("\xEF\xBB\xBFretry: 100\ndata\n\n: c\n\n", uint8(1))
	f.Add("data: \xff\n\n", uint8(2))
	f.Fuzz(func(t *testing.T, in string, step uint8) {
		whole, errWhole := parseChunks(eventStream, 64, []string{in}, nil)
		n := 1 + int(step)%16
		var chunks []string
		for s := in; s != ""; {
			k := min(n, len(s))
			chunks = append(chunks, s[:k])
			s = s[k:]
		}
		cut, errCut := parseChunks(eventStream, 64, chunks, nil)
		if !slices.EqualFunc(whole, cut, equalGot) || fmt.Sprint(errWhole) != fmt.Sprint(errCut) {
			t.Fatalf("%q whole: %v %v; in reads of %d: %v %v", in, whole, errWhole, n, cut, errCut)
		}
	})
}
