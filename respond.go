package caddysse

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// writeJSON answers with status and v encoded as JSON, without escaping
// <, > and & (the answers are not HTML, and people read them).
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encoding the answer failed"}` + "\n")
	}
	writeJSONBytes(w, status, buf.Bytes())
}

// The header values of JSON answers, shared (see setStreamHeaders).
var (
	jsonContentType  = []string{"application/json"}
	jsonCacheControl = []string{"no-store"}
)

// writeJSONBytes answers with status and a JSON body.
func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Cache-Control"] = jsonCacheControl
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// appendJSONString appends s as a JSON string. Only the quote, the
// backslash and control characters need escaping; U+2028 and U+2029 are
// escaped too, for JavaScript's sake.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var esc string
		switch {
		case c == '"':
			esc = `\"`
		case c == '\\':
			esc = `\\`
		case c < 0x20:
			esc = `\u00` + string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&0xf])
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9):
			esc = `\u202` + string("89"[s[i+2]-0xa8])
			b = append(b, s[start:i]...)
			b = append(b, esc...)
			i += 2
			start = i + 1
			continue
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// errorBody is the JSON body of every refusal.
type errorBody struct {
	Error string `json:"error"`
}

// writeError refuses a request with status and a message a user can act
// on, as {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	b := make([]byte, 0, len(msg)+16)
	b = append(b, `{"error":`...)
	b = appendJSONString(b, msg)
	writeJSONBytes(w, status, append(b, "}\n"...))
}

// methodNotAllowed refuses a request method, listing the allowed ones.
func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed here; use "+allow)
}
