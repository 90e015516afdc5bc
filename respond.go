package caddysse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ssehub/caddy-sse/transport"
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

// requestError refuses a request with a status and a message a user can
// act on; cause, for a failure of the server (5xx), is what to log.
type requestError struct {
	status     int
	msg        string
	cause      error
	retryAfter int            // seconds, for a Retry-After header; 0: none
	challenge  string         // for a WWW-Authenticate header (401); "": none
	figures    *ingestFigures // what a streaming publish published before
}

// Error returns the refusal's message.
func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// The refusals of a publish that its idempotency key decides.
var (
	errKeyInFlight = &requestError{status: http.StatusConflict,
		msg: "a request with this Idempotency-Key is still in progress; repeat it once that one is answered"}
	errKeyMismatch = &requestError{status: http.StatusUnprocessableEntity,
		msg: "this Idempotency-Key was used for another request (other events) in the last 24 hours; use a new key for a new request"}
)

// asRequestError returns err as a refusal; an error of unknown kind is a
// bad request.
func asRequestError(err error) *requestError {
	var re *requestError
	if errors.As(err, &re) {
		return re
	}
	return &requestError{status: http.StatusBadRequest, msg: err.Error()}
}

// publishError turns an error of Hub.Publish into the refusal it answers.
func publishError(err error) *requestError {
	switch {
	case errors.Is(err, transport.ErrKeyMismatch):
		return errKeyMismatch
	case errors.Is(err, transport.ErrKeyInFlight):
		return errKeyInFlight
	case errors.Is(err, context.Canceled):
		return &requestError{status: http.StatusBadRequest, msg: "the request was cancelled before its events were stored"}
	case errors.Is(err, transport.ErrMaybePublished):
		// its message says what to do: "try again later" would invite a
		// duplicate
		return &requestError{status: http.StatusServiceUnavailable, msg: err.Error(), cause: err}
	}
	return &requestError{status: http.StatusServiceUnavailable,
		msg: fmt.Sprintf("%v; try again later", err), cause: err}
}

// errStopping ends the streams of a config that is being replaced or
// stopped.
var errStopping = &requestError{status: http.StatusServiceUnavailable, retryAfter: 1,
	msg: "the server is reloading or stopping: the events before this point were published; " +
		"send the rest again (with the same Idempotency-Key, the whole stream again)"}

// writeRefusal answers a refused publish: {"error": ...}, with the
// stream's figures for a stream.
func writeRefusal(w http.ResponseWriter, e *requestError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if e.challenge != "" {
		w.Header().Set("WWW-Authenticate", e.challenge)
	}
	if e.figures == nil {
		writeError(w, e.status, e.msg)
		return
	}
	b := append(make([]byte, 0, len(e.msg)+128), `{"error":`...)
	b = appendJSONString(b, e.msg)
	b = append(b, ',')
	b = appendIngestFigures(b, e.figures)
	writeJSONBytes(w, e.status, append(b, "}\n"...))
}

// ingestFigures say what a stream published: its events so far, those
// an earlier attempt with the same key had already published, and the
// first and last ids.
type ingestFigures struct {
	count, repeated int
	firstID, lastID string
}

// appendIngestFigures appends the figures as JSON members (without
// braces).
func appendIngestFigures(b []byte, f *ingestFigures) []byte {
	b = append(b, `"count":`...)
	b = strconv.AppendInt(b, int64(f.count), 10)
	if f.count > 0 {
		b = append(b, `,"first_id":`...)
		b = appendJSONString(b, f.firstID)
		b = append(b, `,"last_id":`...)
		b = appendJSONString(b, f.lastID)
	}
	if f.repeated > 0 {
		b = append(b, `,"repeated":`...)
		b = strconv.AppendInt(b, int64(f.repeated), 10)
	}
	return b
}
