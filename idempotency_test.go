package caddysse

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

func TestIdempotencyKeyHeader(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		key    string
		err    string
	}{
		{"none", nil, "", ""},
		{"uuid", []string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324", ""},
		{"one character", []string{"x"}, "x", ""},
		{"255 characters", []string{strings.Repeat("k", 255)}, strings.Repeat("k", 255), ""},
		{"printable ASCII", []string{`a b~!"#$%&'()*+,-./:;<=>?@[\]^_{|}` + "`"}, `a b~!"#$%&'()*+,-./:;<=>?@[\]^_{|}` + "`", ""},
		{"quoted", []string{`"8e03978e"`}, "8e03978e", ""},
		{"quoted with escapes", []string{`"a\"b\\c"`}, `a"b\c`, ""},
		{"empty", []string{""}, "", "1 to 255 characters, not 0"},
		{"quoted empty", []string{`""`}, "", "1 to 255 characters, not 0"},
		{"256 characters", []string{strings.Repeat("k", 256)}, "", "1 to 255 characters, not 256"},
		{"not ASCII", []string{"clé"}, "", "printable ASCII characters only"},
		{"control character", []string{"a\x01b"}, "", "byte 1 is 0x01"},
		{"DEL", []string{"a\x7f"}, "", "printable ASCII"},
		{"two headers", []string{"a", "b"}, "", "2 Idempotency-Key headers"},
		{"unterminated quote", []string{`"abc`}, "", "quoted string"},
		{"lone quote", []string{`"`}, "", "quoted string"},
		{"quote inside", []string{`"a"b"`}, "", "quoted string"},
		{"bad escape", []string{`"a\nb"`}, "", "quoted string"},
		{"escape at the end", []string{`"a\"`}, "", "quoted string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range c.values {
				h.Add("Idempotency-Key", v)
			}
			key, err := idempotencyKey(h)
			if c.err == "" {
				if err != nil || key != c.key {
					t.Fatalf("got %q, %v; want %q", key, err, c.key)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || asRequestError(err).status != http.StatusBadRequest {
				t.Fatalf("got %q, %v; want a 400 containing %q", key, err, c.err)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	base := []transport.Message{
		{Topics: []string{"a", "b"}, Type: "e", Data: "data", Retry: -1},
		{Topics: []string{"c"}, Data: strings.Repeat("long data ", 2000), Retry: 1000},
	}
	with := func(change func(m []transport.Message) []transport.Message) []transport.Message {
		m := make([]transport.Message, len(base))
		for i, b := range base {
			b.Topics = append([]string(nil), b.Topics...)
			m[i] = b
		}
		return change(m)
	}
	fp := fingerprint(base)
	if len(fp) != 64 || fp != fingerprint(with(func(m []transport.Message) []transport.Message { return m })) {
		t.Fatalf("fingerprint %q is not stable", fp)
	}
	same := map[string][]transport.Message{
		"the default type named": {{Topics: []string{"t"}, Type: "message", Retry: -1}},
	}
	if fingerprint(same["the default type named"]) != fingerprint([]transport.Message{{Topics: []string{"t"}, Retry: -1}}) {
		t.Errorf("the default type named and unnamed differ")
	}
	others := map[string][]transport.Message{
		"topic":         with(func(m []transport.Message) []transport.Message { m[0].Topics[1] = "x"; return m }),
		"topic order":   with(func(m []transport.Message) []transport.Message { m[0].Topics[0], m[0].Topics[1] = "b", "a"; return m }),
		"topics joined": with(func(m []transport.Message) []transport.Message { m[0].Topics = []string{"ab"}; return m }),
		"topic into type": with(func(m []transport.Message) []transport.Message {
			m[0].Topics = []string{"a"}
			m[0].Type = "be"
			return m
		}),
		"type":             with(func(m []transport.Message) []transport.Message { m[0].Type = "f"; return m }),
		"data":             with(func(m []transport.Message) []transport.Message { m[1].Data += "!"; return m }),
		"retry":            with(func(m []transport.Message) []transport.Message { m[0].Retry = 100; return m }),
		"event order":      with(func(m []transport.Message) []transport.Message { m[0], m[1] = m[1], m[0]; return m }),
		"fewer events":     with(func(m []transport.Message) []transport.Message { return m[:1] }),
		"one more event":   with(func(m []transport.Message) []transport.Message { return append(m, m[1]) }),
		"data across type": with(func(m []transport.Message) []transport.Message { m[0].Type = "ed"; m[0].Data = "ata"; return m }),
	}
	seen := map[string]string{fp: "base"}
	for name, msgs := range others {
		f := fingerprint(msgs)
		if prev, dup := seen[f]; dup {
			t.Errorf("%s: same fingerprint as %s", name, prev)
		}
		seen[f] = name
	}
}

// BenchmarkFingerprint measures the fingerprint of a 64-byte event.
func BenchmarkFingerprint(b *testing.B) {
	msgs := []transport.Message{{Topics: []string{"orders"}, Type: "created", Data: payload64, Retry: -1}}
	b.ReportAllocs()
	for b.Loop() {
		fingerprint(msgs)
	}
}
