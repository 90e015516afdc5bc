package caddysse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Publish))
}

// Limits of a publish request.
const (
	DefaultMaxSize   = 1 << 20
	maxPublishTopics = 100
)

// Publish is the sse_publish handler: a POST publishes one event, or an
// array of events, to a hub. It has no authentication of its own: protect
// its route with Caddy's matchers and handlers (remote_ip, basic_auth,
// forward_auth, ...).
//
// Bodies: application/x-www-form-urlencoded or multipart/form-data with
// the fields topic (repeatable), data, event (or type) and retry;
// application/json with an object {"topic", "event", "data", "retry"} or
// an array of them; anything else is the data itself, with topic and
// event in the query string. The answer is JSON: the event's id, its
// topics and the number of local subscribers it was queued for.
type Publish struct {
	// The hub to publish to. Default: "default".
	Hub string `json:"hub,omitempty"`

	// Topic templates, with placeholders; when set, they are the topics of
	// every event published through this route and the request's own are
	// ignored. A template whose result is empty, or whose placeholders are
	// unknown or empty, is dropped.
	Topics []string `json:"topics,omitempty"`

	// The largest request body, in bytes. Default: 1 MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// Origins allowed to publish from other sites, with credentials; "*"
	// allows any origin, without credentials.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	hub  *Hub
	cors *corsPolicy
}

// CaddyModule returns the Caddy module information.
func (*Publish) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_publish",
		New: func() caddy.Module { return new(Publish) },
	}
}

// Provision sets up the handler.
func (p *Publish) Provision(ctx caddy.Context) error {
	if p.Hub == "" {
		p.Hub = DefaultHubName
	}
	if p.MaxSize == 0 {
		p.MaxSize = DefaultMaxSize
	}
	if p.MaxSize < 0 {
		return fmt.Errorf("max_size must not be negative")
	}
	if err := validateOrigins(p.CORSOrigins); err != nil {
		return err
	}
	hub, err := lookupHub(ctx, p.Hub)
	if err != nil {
		return err
	}
	p.hub = hub
	p.cors = newCORSPolicy(p.CORSOrigins, "POST")
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The sse_publish
// handler always responds; it never calls next.
func (p *Publish) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if !admit(p.cors, w, r, http.MethodPost, "publish") {
		return nil
	}
	var forced []string
	if len(p.Topics) > 0 {
		topics, err := expandTopics(r, p.Topics)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return nil
		}
		if len(topics) == 0 {
			writeError(w, http.StatusBadRequest, "this request has no topic to publish to (the route's topic templates gave none)")
			return nil
		}
		forced = topics
	}
	servePublish(w, r, p.hub, forced, p.MaxSize)
	return nil
}

// servePublish decodes a publish request, publishes it to hub and answers.
// forced, when set, replaces the topics the request names.
func servePublish(w http.ResponseWriter, r *http.Request, hub *Hub, forced []string, maxSize int64) {
	r.Body = http.MaxBytesReader(w, r.Body, maxSize)
	msgs, array, err := decodePublish(r, forced, maxSize)
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			writeError(w, re.status, re.msg)
			return
		}
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	receipts, err := hub.Publish(r.Context(), transport.PublishRequest{Messages: msgs})
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, context.Canceled) {
			status = http.StatusBadRequest
		}
		writeError(w, status, err.Error())
		return
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	b := (*bp)[:0]
	if array {
		b = append(b, '[')
	}
	for i, rc := range receipts {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPublishResult(b, rc)
	}
	if array {
		b = append(b, ']')
	}
	*bp = append(b, '\n')
	writeJSONBytes(w, http.StatusOK, *bp)
}

// publishResult is the answer to a publish, per event, as
// appendPublishResult writes it (and clients such as caddy sse-publish
// read it).
type publishResult struct {
	ID          string   `json:"id"`
	Topics      []string `json:"topics"`
	Subscribers int      `json:"subscribers"`
}

// appendPublishResult appends the JSON answer for one published event:
// {"id": ..., "topics": [...], "subscribers": n}.
func appendPublishResult(b []byte, rc transport.Receipt) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, rc.ID)
	b = append(b, `,"topics":[`...)
	for i, t := range rc.Topics {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t)
	}
	b = append(b, `],"subscribers":`...)
	b = strconv.AppendInt(b, int64(rc.Subscribers), 10)
	return append(b, '}')
}

// requestError refuses a request with a status and a message.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// draft is a message as a request states it, before it is checked.
type draft struct {
	topics []string
	typ    string
	data   string
	retry  int64 // -1: none
}

// decodePublish reads the messages of a publish request and checks them
// all; array reports whether the request was a JSON array.
func decodePublish(r *http.Request, forced []string, maxSize int64) ([]transport.Message, bool, error) {
	drafts, array, err := readDrafts(r, maxSize)
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
		topics, err := requestTopics(d.topics)
		if err != nil {
			return m, err
		}
		m.Topics = topics
	}
	return m, nil
}

// validateEventType checks an event type: it ends up on one line.
func validateEventType(t string) error {
	if i := strings.IndexAny(t, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("event type %q contains CR, LF or NUL", t)
	}
	if !utf8.ValidString(t) {
		return fmt.Errorf("event type %q is not valid UTF-8", t)
	}
	return nil
}

// readDrafts decodes the body according to its content type.
func readDrafts(r *http.Request, maxSize int64) ([]draft, bool, error) {
	mediaType := mediaTypeOf(r.Header.Get("Content-Type"))
	switch {
	case mediaType == "application/x-www-form-urlencoded":
		d, err := urlencodedDraft(r)
		return []draft{d}, false, err
	case mediaType == "multipart/form-data":
		if err := r.ParseMultipartForm(maxSize); err != nil {
			return nil, false, wrapBodyError("reading the multipart form", err)
		}
		d, err := multipartDraft(r)
		return []draft{d}, false, err
	case mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"):
		buf, err := readBody(r)
		defer putBody(buf)
		if err != nil {
			return nil, false, err
		}
		return jsonDrafts(buf.Bytes())
	default:
		buf, err := readBody(r)
		defer putBody(buf)
		if err != nil {
			return nil, false, err
		}
		var f formFields
		if err := f.scan(r.URL.RawQuery); err != nil {
			return nil, false, badRequest("reading the query: %v", err)
		}
		d, err := f.draft()
		d.data = buf.String()
		return []draft{d}, false, err
	}
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

// urlencodedDraft reads a form body and the query string, as ParseForm
// would merge them (the body's values first), without building a map.
func urlencodedDraft(r *http.Request) (draft, error) {
	buf, err := readBody(r)
	defer putBody(buf)
	if err != nil {
		return draft{}, err
	}
	var f formFields
	if err := f.scan(buf.String()); err != nil {
		return draft{}, badRequest("reading the form: %v", err)
	}
	if err := f.scan(r.URL.RawQuery); err != nil {
		return draft{}, badRequest("reading the form: %v", err)
	}
	return f.draft()
}

// wrapBodyError keeps a body size error recognisable and words the rest.
func wrapBodyError(what string, err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return badRequest("%s: %v", what, err)
}

// formFields are the fields of a publish form: topic (repeatable), data,
// event (or type), retry, and id, which is refused. Of the others, the
// first value counts.
type formFields struct {
	topics                     []string
	data, event, typ, retry    string
	hasData, hasEvent, hasType bool
	hasRetry, hasID            bool
}

// scan adds the fields of an urlencoded form or query string. Like
// url.ParseQuery, it refuses a bad escape or a semicolon separator.
func (f *formFields) scan(raw string) error {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		if strings.Contains(pair, ";") {
			return errors.New("invalid semicolon separator in query")
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := queryUnescape(k)
		if err != nil {
			return err
		}
		value, err := queryUnescape(v)
		if err != nil {
			return err
		}
		f.add(key, value)
	}
	return nil
}

// queryUnescape decodes a form component, allocating only when there is
// something to decode.
func queryUnescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// add adds one field.
func (f *formFields) add(key, value string) {
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
	}
}

// draft checks the fields and makes the draft of a message out of them.
// An empty event falls back to type, an empty retry counts as none.
func (f *formFields) draft() (draft, error) {
	d := draft{topics: f.topics, data: f.data, typ: f.event, retry: -1}
	if f.hasID {
		return d, errSuppliedID
	}
	if d.typ == "" {
		d.typ = f.typ
	}
	if f.retry != "" {
		n, err := strconv.ParseInt(f.retry, 10, 64)
		if err != nil || n < 0 {
			return d, badRequest("retry %q is not a non-negative integer number of milliseconds", f.retry)
		}
		d.retry = n
	}
	return d, nil
}

// multipartDraft reads a multipart form; data may also be a file.
func multipartDraft(r *http.Request) (draft, error) {
	var f formFields
	for _, key := range []string{"topic", "data", "event", "type", "retry", "id"} {
		for _, value := range r.Form[key] { // in the form's own order
			f.add(key, value)
		}
	}
	d, err := f.draft()
	if err != nil {
		return d, err
	}
	if files := r.MultipartForm.File["data"]; len(files) > 0 && !r.Form.Has("data") {
		f, err := files[0].Open()
		if err != nil {
			return d, badRequest("reading the data file: %v", err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return d, badRequest("reading the data file: %v", err)
		}
		d.data = string(b)
	}
	return d, nil
}

var errSuppliedID = badRequest("event ids are assigned by the hub; remove the id field")

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
	array := len(trimmed) > 0 && trimmed[0] == '['
	var msgs []jsonMessage
	var err error
	if array {
		err = decodeStrictJSON(body, &msgs)
	} else {
		msgs = make([]jsonMessage, 1)
		err = decodeStrictJSON(body, &msgs[0])
	}
	if err != nil {
		return nil, false, badRequest("malformed JSON: %v", err)
	}
	if len(msgs) == 0 {
		return nil, false, badRequest("the array holds no event to publish")
	}
	drafts := make([]draft, len(msgs))
	for i, jm := range msgs {
		d, err := jm.draft()
		if err != nil {
			if array {
				return nil, false, badRequest("event %d: %v", i, err)
			}
			return nil, false, err
		}
		drafts[i] = d
	}
	return drafts, array, nil
}

// decodeStrictJSON decodes exactly one JSON value with known fields only.
func decodeStrictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func (jm jsonMessage) draft() (draft, error) {
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
		n, err := strconv.ParseInt(string(jm.Retry), 10, 64)
		if err != nil || n < 0 {
			return d, badRequest("retry %s is not a non-negative integer number of milliseconds", jm.Retry)
		}
		d.retry = n
	}
	return d, nil
}

// jsonTopics reads "topic": a string or an array of strings.
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

// validateOrigins checks cors_origins entries.
func validateOrigins(origins []string) error {
	for _, o := range origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("cors origin %q is not of the form scheme://host[:port]", o)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Publish)(nil)
	_ caddyhttp.MiddlewareHandler = (*Publish)(nil)
)
