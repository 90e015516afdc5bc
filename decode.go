package caddysse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ssehub/caddy-sse/transport"
)

// Limits of what a publish request may ask.
const (
	maxPublishTopics = 100        // topics of one event
	maxArrayEvents   = 1000       // events of one JSON array
	minRetry         = 100        // ms: a publisher's retry, at least
	maxRetry         = 86_400_000 // ms: and at most 24 hours
)

// acceptedFields names the fields of a publish form, for refusals.
const acceptedFields = "topic, data, event (or type) and retry"

var errSuppliedID = badRequest("event ids are assigned by the hub; remove the id field")

// draft is a message as a request states it, before it is checked.
type draft struct {
	topics []string
	typ    string
	data   string
	retry  int64 // -1: none
}

// decodePublish reads the messages of a publish request and checks them
// all; array reports whether the request was a JSON array. The messages'
// strings may share the memory of the request's body: the event made of a
// message copies what it keeps (transport.NewEvent), so that no body
// outlives its request.
func decodePublish(r *http.Request, forced []string) ([]transport.Message, bool, error) {
	drafts, array, err := readDrafts(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, false, &requestError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("the request body is larger than the %d bytes allowed", mbe.Limit)}
		}
		return nil, false, err
	}
	msgs := make([]transport.Message, len(drafts))
	for i, d := range drafts {
		m, err := d.message(forced)
		if err != nil {
			if array {
				return nil, false, badRequest("event %d: %v", i, err)
			}
			return nil, false, badRequest("%v", err)
		}
		msgs[i] = m
	}
	return msgs, array, nil
}

// message checks d and turns it into a message.
func (d draft) message(forced []string) (transport.Message, error) {
	m := transport.Message{Type: d.typ, Data: d.data, Retry: d.retry}
	if err := validateEventType(d.typ); err != nil {
		return m, err
	}
	if !utf8.ValidString(d.data) {
		return m, fmt.Errorf("data is not valid UTF-8")
	}
	switch {
	case forced != nil:
		m.Topics = forced
	case len(d.topics) == 0:
		m.Topics = []string{defaultTopic}
	case len(d.topics) > maxPublishTopics:
		return m, fmt.Errorf("%d topics given; at most %d are allowed", len(d.topics), maxPublishTopics)
	default:
		topics, err := publishTopics(d.topics)
		if err != nil {
			return m, err
		}
		m.Topics = topics
	}
	return m, nil
}

// parseRetry reads a publisher's retry: whole milliseconds, from minRetry
// to maxRetry. what is the value as the request wrote it.
func parseRetry(s, what string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < minRetry || n > maxRetry {
		return 0, badRequest("retry %s is not allowed: give the reconnection delay in whole milliseconds, from %d to %d (24 hours)",
			what, minRetry, maxRetry)
	}
	return n, nil
}

// readDrafts decodes the body according to its content type.
func readDrafts(r *http.Request) ([]draft, bool, error) {
	kind, mediaType := classifyBody(r.Header.Get("Content-Type"))
	switch kind {
	case bodyForm:
		d, err := urlencodedDraft(r)
		return []draft{d}, false, err
	case bodyMultipart:
		d, err := multipartDraft(r)
		return []draft{d}, false, err
	case bodyJSON:
		buf, err := readBody(r)
		defer putBody(buf)
		if err != nil {
			return nil, false, err
		}
		return jsonDrafts(buf.Bytes())
	default:
		d, err := rawDraft(r, mediaType)
		return []draft{d}, false, err
	}
}

// bodyKind is what a publish body is, by its Content-Type.
type bodyKind uint8

const (
	bodyRaw         bodyKind = iota // the data itself, topic and event in the query
	bodyForm                        // application/x-www-form-urlencoded
	bodyMultipart                   // multipart/form-data
	bodyJSON                        // application/json, text/json, or a +json type
	bodyEventStream                 // text/event-stream: events published as they arrive
	bodyNDJSON                      // application/x-ndjson: likewise
)

// ingestFormat is how a streaming publish body is written.
type ingestFormat uint8

const (
	notAStream  ingestFormat = iota
	eventStream              // text/event-stream
	ndjson                   // application/x-ndjson
)

// String returns the format's media type.
func (f ingestFormat) String() string {
	switch f {
	case eventStream:
		return "text/event-stream"
	case ndjson:
		return "application/x-ndjson"
	}
	return ""
}

// classifyBody returns what a body of contentType is, and its media type:
// the one place that reads a publish's Content-Type.
func classifyBody(contentType string) (bodyKind, string) {
	mediaType := mediaTypeOf(contentType)
	switch {
	case mediaType == "application/x-www-form-urlencoded":
		return bodyForm, mediaType
	case mediaType == "multipart/form-data":
		return bodyMultipart, mediaType
	case mediaType == "application/json" || mediaType == "text/json" || strings.HasSuffix(mediaType, "+json"):
		return bodyJSON, mediaType
	case mediaType == "text/event-stream":
		return bodyEventStream, mediaType
	case mediaType == "application/x-ndjson":
		return bodyNDJSON, mediaType
	}
	return bodyRaw, mediaType
}

// ingest returns the format of a body published event by event as it
// arrives (serveIngest), or notAStream.
func (k bodyKind) ingest() ingestFormat {
	switch k {
	case bodyEventStream:
		return eventStream
	case bodyNDJSON:
		return ndjson
	}
	return notAStream
}

// mediaTypeOf returns the media type of a Content-Type header, without
// parsing the usual ones.
func mediaTypeOf(contentType string) string {
	switch contentType {
	case "application/x-www-form-urlencoded", "application/json", "":
		return contentType
	}
	mediaType, _, _ := mime.ParseMediaType(contentType)
	return mediaType
}

// bodyPool holds the buffers publish bodies are read into.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads the whole (size-limited) body into a pooled buffer, to be
// given back with putBody.
func readBody(r *http.Request) (*bytes.Buffer, error) {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return buf, wrapBodyError("reading the body", err)
	}
	return buf, nil
}

func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		bodyPool.Put(buf)
	}
}

// wrapBodyError keeps a body size error recognisable and words the rest.
func wrapBodyError(what string, err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return badRequest("%s: %v", what, err)
}

// rawDraft reads a body that is the data itself; the other fields come
// from the query string.
func rawDraft(r *http.Request, mediaType string) (draft, error) {
	var f formFields
	if err := f.scan(r.URL.RawQuery, false); err != nil {
		return draft{}, badRequest("reading the query: %v", err)
	}
	if f.hasData {
		sent := "without a Content-Type"
		if mediaType != "" {
			sent = "as " + mediaType
		}
		return draft{}, badRequest("the body of a request sent %s is the data: remove data from the query string, "+
			"or send the fields as a form (Content-Type: application/x-www-form-urlencoded)", sent)
	}
	buf, err := readBody(r)
	defer putBody(buf)
	if err != nil {
		return draft{}, err
	}
	d, err := f.draft()
	d.data = buf.String()
	return d, err
}

// urlencodedDraft reads a form body and the query string, as ParseForm
// would merge them (the body's values first), without building a map.
// Unknown fields are refused in the body and ignored in the query string.
func urlencodedDraft(r *http.Request) (draft, error) {
	buf, err := readBody(r)
	defer putBody(buf)
	if err != nil {
		return draft{}, err
	}
	body := buf.String()
	if looksLikeJSON(body) {
		return draft{}, errFormIsJSON
	}
	var f formFields
	if err := f.scan(body, true); err != nil {
		return draft{}, badRequest("reading the form: %v", err)
	}
	if err := f.scan(r.URL.RawQuery, false); err != nil {
		return draft{}, badRequest("reading the form: %v", err)
	}
	return f.draft()
}

// looksLikeJSON reports whether a form body is JSON sent without its
// content type, as curl -d '{...}' does.
func looksLikeJSON(s string) bool {
	s = strings.TrimLeft(s, " \t\r\n")
	return s != "" && (s[0] == '{' || s[0] == '[')
}

var errJSONIsNot = badRequest(`the body was sent as JSON but is not a JSON object or array: send {"topic": "news", "data": "hello"} ` +
	"(or an array of them), or send a form with Content-Type: application/x-www-form-urlencoded")

var errFormIsJSON = badRequest("the body is JSON but was sent as a form: send it with Content-Type: application/json")

// formFields are the fields of a publish form: topic (repeatable), data,
// event (or type), retry, and id, which is refused. Of the others, the
// first value counts.
type formFields struct {
	topics                     []string
	data, event, typ, retry    string
	hasData, hasEvent, hasType bool
	hasRetry, hasID            bool
	unknown                    string // the first unknown field of the body
	hasUnknown, unknownBare    bool   // bare: a key without "="
}

// scan adds the fields of an urlencoded form or query string; inBody says
// which it is (unknown fields of the query are ignored). Like
// url.ParseQuery, it refuses a bad escape or a semicolon separator.
func (f *formFields) scan(raw string, inBody bool) error {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		if strings.Contains(pair, ";") {
			return errors.New("invalid semicolon separator in query")
		}
		k, v, hasValue := strings.Cut(pair, "=")
		key, err := queryUnescape(k)
		if err != nil {
			return err
		}
		value, err := queryUnescape(v)
		if err != nil {
			return err
		}
		if !f.add(key, value) && inBody && !f.hasUnknown {
			f.hasUnknown, f.unknown, f.unknownBare = true, key, !hasValue
		}
	}
	return nil
}

// add adds one field and reports whether it is one of a form's.
func (f *formFields) add(key, value string) bool {
	first := func(have *bool, into *string) {
		if !*have {
			*have, *into = true, value
		}
	}
	switch key {
	case "topic":
		f.topics = append(f.topics, value)
	case "data":
		first(&f.hasData, &f.data)
	case "event":
		first(&f.hasEvent, &f.event)
	case "type":
		first(&f.hasType, &f.typ)
	case "retry":
		first(&f.hasRetry, &f.retry)
	case "id":
		f.hasID = true
	default:
		return false
	}
	return true
}

// draft checks the fields and makes the draft of a message out of them.
// An empty event falls back to type, an empty retry counts as none.
func (f *formFields) draft() (draft, error) {
	d := draft{topics: f.topics, data: f.data, typ: f.event, retry: -1}
	if f.hasID {
		return d, errSuppliedID
	}
	if f.hasUnknown {
		return d, unknownFieldError(f.unknown, f.unknownBare)
	}
	if d.typ == "" {
		d.typ = f.typ
	}
	if f.retry != "" {
		n, err := parseRetry(f.retry, strconv.Quote(f.retry))
		if err != nil {
			return d, err
		}
		d.retry = n
	}
	return d, nil
}

// unknownFieldError refuses a form field that is not one of a publish
// form's; bare is set for a key without a value, as curl -d 'some text'
// sends it.
func unknownFieldError(key string, bare bool) error {
	switch {
	case looksLikeJSON(key):
		return errFormIsJSON
	case bare:
		return badRequest("the form field %q is not accepted (the fields are %s); to publish a body as it is, "+
			"send it with Content-Type: text/plain and the topic in the query string (?topic=...)", key, acceptedFields)
	}
	return badRequest("the form field %q is not accepted; the fields are %s", key, acceptedFields)
}

// multipartDraft reads a multipart form part by part, then the query
// string (the body's values first, as for an urlencoded form). data may be
// a file; it is read into memory, never stored on disk.
func multipartDraft(r *http.Request) (draft, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return draft{}, wrapBodyError("reading the multipart form", err)
	}
	var f formFields
	var unknown []string
	var fileData string
	hasFileData := false
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return draft{}, wrapBodyError("reading the multipart form", err)
		}
		name := part.FormName()
		b, err := io.ReadAll(part)
		if err != nil {
			return draft{}, wrapBodyError("reading the multipart form", err)
		}
		switch {
		case part.FileName() == "":
			if !f.add(name, string(b)) {
				unknown = append(unknown, name)
			}
		case name == "data":
			if !hasFileData {
				hasFileData, fileData = true, string(b)
			}
		case name == "topic" || name == "event" || name == "type" || name == "retry" || name == "id":
			return draft{}, badRequest("the form field %q is a file; only data may be one", name)
		default:
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		f.hasUnknown, f.unknown = true, unknown[0]
	}
	if err := f.scan(r.URL.RawQuery, false); err != nil {
		return draft{}, badRequest("reading the query: %v", err)
	}
	d, err := f.draft()
	if err != nil {
		return d, err
	}
	if hasFileData && !f.hasData {
		d.data = fileData
	}
	return d, nil
}

// jsonMessage is one event of a JSON publish request.
type jsonMessage struct {
	Topic json.RawMessage `json:"topic"`
	Event *string         `json:"event"`
	Type  *string         `json:"type"`
	Data  json.RawMessage `json:"data"`
	Retry json.RawMessage `json:"retry"`
	ID    json.RawMessage `json:"id"`
}

// jsonDrafts decodes a JSON object or array of objects.
func jsonDrafts(body []byte) ([]draft, bool, error) {
	if !utf8.Valid(body) {
		return nil, false, badRequest("the JSON body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] != '[' && trimmed[0] != '{' && trimmed[0] != 'n' {
		return nil, false, errJSONIsNot
	}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		drafts, err := jsonArrayDrafts(body)
		return drafts, true, err
	}
	var jm *jsonMessage
	if err := decodeStrictJSON(body, &jm); err != nil {
		return nil, false, jsonError("", err)
	}
	if jm == nil {
		return nil, false, badRequest("the JSON body is null: send an object, such as {\"topic\": \"news\", \"data\": \"hello\"}, or an array of them")
	}
	d, err := jm.draft()
	if err != nil {
		return nil, false, err
	}
	return []draft{d}, false, nil
}

// jsonArrayDrafts decodes a JSON array of objects one element at a time,
// and stops at the first element beyond maxArrayEvents: a long array costs
// no more than one of maxArrayEvents events.
func jsonArrayDrafts(body []byte) ([]draft, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if _, err := dec.Token(); err != nil { // [
		return nil, jsonError("", err)
	}
	var drafts []draft
	for i := 0; dec.More(); i++ {
		if i == maxArrayEvents {
			return nil, badRequest("the array holds more than %d events; publish at most %d per request", maxArrayEvents, maxArrayEvents)
		}
		var jm *jsonMessage
		if err := dec.Decode(&jm); err != nil {
			return nil, jsonError(fmt.Sprintf("event %d: ", i), err)
		}
		if jm == nil {
			return nil, badRequest("event %d is null: every event of the array must be an object", i)
		}
		d, err := jm.draft()
		if err != nil {
			return nil, badRequest("event %d: %v", i, err)
		}
		drafts = append(drafts, d)
	}
	if _, err := dec.Token(); err != nil { // ]
		return nil, jsonError("", err)
	}
	if err := endOfJSON(dec); err != nil {
		return nil, jsonError("", err)
	}
	if len(drafts) == 0 {
		return nil, badRequest("the array holds no event to publish")
	}
	return drafts, nil
}

// jsonError words a JSON decoding error; where says which event it is in.
func jsonError(where string, err error) error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		if ute.Field == "" {
			return badRequest("%snot a JSON object: an event is an object such as {\"topic\": \"news\", \"data\": \"hello\"}", where)
		}
		return badRequest("%s%s must be a string, not a JSON %s", where, ute.Field, ute.Value)
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badRequest("%sunknown field %s; the fields are topic, data, event (or type) and retry", where, msg)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("malformed JSON: %sthe body ends too soon", where)
	}
	return badRequest("malformed JSON: %s%v", where, err)
}

// decodeStrictJSON decodes exactly one JSON value with known fields only.
func decodeStrictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return endOfJSON(dec)
}

// endOfJSON checks that nothing follows the decoded value.
func endOfJSON(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func (jm *jsonMessage) draft() (draft, error) {
	d := draft{retry: -1}
	if !isNull(jm.ID) {
		return d, errSuppliedID
	}
	topics, err := jsonTopics(jm.Topic)
	if err != nil {
		return d, err
	}
	d.topics = topics
	switch {
	case jm.Event != nil:
		d.typ = *jm.Event
	case jm.Type != nil:
		d.typ = *jm.Type
	}
	if d.data, err = jsonData(jm.Data); err != nil {
		return d, err
	}
	if !isNull(jm.Retry) {
		if d.retry, err = parseRetry(string(jm.Retry), string(jm.Retry)); err != nil {
			return d, err
		}
	}
	return d, nil
}

// jsonTopics reads "topic": a string or a non-empty array of strings.
func jsonTopics(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest("topic must be a string or an array of strings")
	}
	if len(many) == 0 {
		return nil, badRequest("topic is an empty array: name at least one topic, or leave topic out to publish to %q", defaultTopic)
	}
	return many, nil
}

// jsonData reads "data": a string is the data itself, any other value its
// compact JSON encoding.
func jsonData(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", badRequest("data: %v", err)
		}
		return s, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", badRequest("data: %v", err)
	}
	return buf.String(), nil
}
