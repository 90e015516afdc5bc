package caddysse

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/http"
	"strings"

	"github.com/ssehub/caddy-sse/transport"
)

// maxKeyLen is the longest Idempotency-Key, in bytes.
const maxKeyLen = 255

// idempotencyKey returns the Idempotency-Key of a request, or "" when it
// has none. A key is 1 to 255 printable ASCII characters, sent as they are
// or as a quoted string (the Structured Field form of the IETF httpapi
// draft: "key", with \" and \\ inside), which stands for the same key.
func idempotencyKey(h http.Header) (string, error) {
	values := h.Values("Idempotency-Key")
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", badRequest("the request has %d Idempotency-Key headers; send one", len(values))
	}
	key := values[0]
	if strings.HasPrefix(key, `"`) {
		var ok bool
		if key, ok = unquoteKey(key); !ok {
			return "", badRequest("the Idempotency-Key is not a well-formed quoted string; send the key without quotes, or quoted with \\\" and \\\\ escaped")
		}
	}
	if key == "" || len(key) > maxKeyLen {
		return "", badRequest("the Idempotency-Key must have 1 to %d characters, not %d", maxKeyLen, len(key))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return "", badRequest("the Idempotency-Key may hold printable ASCII characters only (a UUID is a good key); byte %d is 0x%02x", i, c)
		}
	}
	return key, nil
}

// unquoteKey reads a Structured Field string: "...", where a backslash
// escapes only a quote or a backslash.
func unquoteKey(s string) (string, bool) {
	if len(s) < 2 || s[len(s)-1] != '"' {
		return "", false
	}
	s = s[1 : len(s)-1]
	if !strings.ContainsAny(s, `"\`) {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return "", false
		case '\\':
			if i+1 == len(s) || (s[i+1] != '"' && s[i+1] != '\\') {
				return "", false
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// fingerprint identifies what a publish asks for: the events it publishes,
// in order, each with its topics, type, data and retry. Two requests with
// the same key are the same request when they publish the same events,
// whatever their content types or the spelling of their bodies; the
// default type counts the same whether it is named ("message") or not.
func fingerprint(msgs []transport.Message) string {
	fp := newFingerprinter(512)
	fp.uint(uint64(len(msgs)))
	for _, m := range msgs {
		fp.fields(m.Topics, m.Type, m.Retry)
		fp.string(m.Data)
	}
	return fp.sum()
}

// fingerprinter hashes numbers and length-prefixed strings through a
// buffer, without copying a whole string at once.
type fingerprinter struct {
	h   hash.Hash
	buf []byte
}

func newFingerprinter(size int) fingerprinter {
	return fingerprinter{h: sha256.New(), buf: make([]byte, 0, size)}
}

// fields adds what an event shares with a stream's envelope: its topics,
// its type (the default type counts the same whether it is named
// ("message") or not) and its retry hint (-1, none, counts as 0).
func (fp *fingerprinter) fields(topics []string, typ string, retry int64) {
	fp.uint(uint64(len(topics)))
	for _, t := range topics {
		fp.string(t)
	}
	if typ == "message" {
		typ = ""
	}
	fp.string(typ)
	fp.uint(uint64(retry + 1))
}

// sum returns the fingerprint of what was added.
func (fp *fingerprinter) sum() string {
	fp.flush()
	return hex.EncodeToString(fp.h.Sum(nil))
}

func (fp *fingerprinter) uint(n uint64) {
	if cap(fp.buf)-len(fp.buf) < binary.MaxVarintLen64 {
		fp.flush()
	}
	fp.buf = binary.AppendUvarint(fp.buf, n)
}

func (fp *fingerprinter) string(s string) {
	fp.uint(uint64(len(s)))
	for s != "" {
		if len(fp.buf) == cap(fp.buf) {
			fp.flush()
		}
		n := min(len(s), cap(fp.buf)-len(fp.buf))
		fp.buf = append(fp.buf, s[:n]...)
		s = s[n:]
	}
}

func (fp *fingerprinter) flush() {
	fp.h.Write(fp.buf)
	fp.buf = fp.buf[:0]
}
