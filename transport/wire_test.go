package transport_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name  string
		id    string
		typ   string
		retry int64
		data  string
		want  string
	}{
		{"plain", "e-1", "", -1, "hello", "id: e-1\ndata: hello\n\n"},
		{"default type left out", "e-1", "message", -1, "x", "id: e-1\ndata: x\n\n"},
		{"event type", "e-2", "price", -1, "42", "id: e-2\nevent: price\ndata: 42\n\n"},
		{"event type with leading space", "e-2", " odd", -1, "x", "id: e-2\nevent:  odd\ndata: x\n\n"},
		{"per-event retry", "e-3", "", 5000, "x", "id: e-3\nretry: 5000\ndata: x\n\n"},
		{"retry zero", "e-3", "t", 0, "x", "id: e-3\nevent: t\nretry: 0\ndata: x\n\n"},
		{"empty data", "e-4", "", -1, "", "id: e-4\ndata:\n\n"},
		{"LF lines", "e-5", "", -1, "a\nb\nc", "id: e-5\ndata: a\ndata: b\ndata: c\n\n"},
		{"CRLF lines", "e-5", "", -1, "a\r\nb", "id: e-5\ndata: a\ndata: b\n\n"},
		{"CR lines", "e-5", "", -1, "a\rb", "id: e-5\ndata: a\ndata: b\n\n"},
		{"mixed endings", "e-5", "", -1, "a\r\n\rb\n\nc", "id: e-5\ndata: a\ndata:\ndata: b\ndata:\ndata: c\n\n"},
		{"trailing LF", "e-6", "", -1, "x\n", "id: e-6\ndata: x\ndata:\n\n"},
		{"only a newline", "e-6", "", -1, "\n", "id: e-6\ndata:\ndata:\n\n"},
		{"CR then LF at the end", "e-6", "", -1, "x\r", "id: e-6\ndata: x\ndata:\n\n"},
		{"leading spaces kept", "e-7", "", -1, "  two spaces", "id: e-7\ndata:   two spaces\n\n"},
		{"colons", "e-8", "", -1, ": not a comment: x", "id: e-8\ndata: : not a comment: x\n\n"},
		{"data that looks like fields", "e-9", "", -1, "id: 5\nevent: x", "id: e-9\ndata: id: 5\ndata: event: x\n\n"},
		{"unicode", "e-10", "", -1, "héllo → 世界 🎉", "id: e-10\ndata: héllo → 世界 🎉\n\n"},
		{"no id", "", "reset", -1, "{}", "event: reset\ndata: {}\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(transport.AppendEvent(nil, tt.id, tt.typ, tt.retry, tt.data))
			if got != tt.want {
				t.Errorf("AppendEvent = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAppendRetryAndComment(t *testing.T) {
	if got := string(transport.AppendRetry(nil, 3500)); got != "retry: 3500\n\n" {
		t.Errorf("AppendRetry = %q", got)
	}
	if got := string(transport.AppendComment(nil, "")); got != ":\n" {
		t.Errorf("AppendComment(\"\") = %q", got)
	}
	if got := string(transport.AppendComment(nil, "why")); got != ": why\n" {
		t.Errorf("AppendComment(why) = %q", got)
	}
}

// normalize is what a client gets back for data: CR and CRLF become LF.
func normalize(data string) string {
	data = strings.ReplaceAll(data, "\r\n", "\n")
	return strings.ReplaceAll(data, "\r", "\n")
}

// roundTrip writes events as the hub does and parses them back as a
// spec-compliant client does.
func roundTrip(t *testing.T, typ string, retry int64, datas ...string) {
	t.Helper()
	var stream []byte
	for i, d := range datas {
		stream = transport.AppendEvent(stream, transport.FormatID("ep", uint64(i+1)), typ, retry, d)
	}
	p := ssetest.NewParser(bytes.NewReader(stream))
	wantType := typ
	if wantType == "" {
		wantType = "message"
	}
	for i, d := range datas {
		var f ssetest.Frame
		for {
			var err error
			f, err = p.Next()
			if err != nil {
				t.Fatalf("event %d: %v (stream %q)", i, err, stream)
			}
			if f.Kind == ssetest.KindEvent {
				break
			}
		}
		if f.Data != normalize(d) {
			t.Fatalf("event %d: data %q, want %q (stream %q)", i, f.Data, normalize(d), stream)
		}
		if f.Type != wantType {
			t.Fatalf("event %d: type %q, want %q", i, f.Type, wantType)
		}
		if want := transport.FormatID("ep", uint64(i+1)); f.LastID != want {
			t.Fatalf("event %d: last id %q, want %q", i, f.LastID, want)
		}
	}
	if f, err := p.Next(); err != io.EOF && !(err == nil && f.Kind == ssetest.KindRetry) {
		t.Fatalf("after the events: %+v, %v", f, err)
	}
}

func TestRoundTrip(t *testing.T) {
	roundTrip(t, "", -1, "", "x", "x\n", "\n\n", "a\r\nb\rc\nd", " lead", ":colon", "data: nested", "\ttab", "\x00nul")
	roundTrip(t, "custom", 100, "one", "two\nlines")
}

func FuzzRoundTrip(f *testing.F) {
	for _, seed := range []string{"", "x", "x\n", "\r\n", "a\rb", " leading", ":", "id: 1", "🎉\r\r\n\n", "\x00"} {
		f.Add(seed, "")
		f.Add(seed, "update")
	}
	f.Fuzz(func(t *testing.T, data, typ string) {
		if !utf8.ValidString(data) || !utf8.ValidString(typ) || strings.ContainsAny(typ, "\r\n\x00") {
			t.Skip()
		}
		roundTrip(t, typ, -1, data, data)
	})
}
