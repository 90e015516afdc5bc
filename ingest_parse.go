package caddysse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// The incremental parsers of streaming publish bodies (see
// ingest.go): text/event-stream, read by the WHATWG rules, and
// application/x-ndjson, one JSON event a line. Both are fed complete
// lines by a lineBuffer and hand complete events to an eventSink.

// ingestEvent is one complete event of a stream, as its parser read it.
// Its byte slices are valid until the parser reads another line.
type ingestEvent struct {
	topics []string // the event's own topics (ndjson), not validated; nil: none named
	typ    []byte   // empty: none named
	data   []byte
	retry  int64 // -1: none
}

// eventSink takes the events of a stream, in order. An error refuses the
// event and ends the stream.
type eventSink interface {
	event(ev *ingestEvent) error
}

// lineParser reads a stream one complete line at a time, given without
// its line ending.
type lineParser interface {
	line(l []byte) error
}

// lineBuffer holds what was read of a stream and not yet parsed, and cuts
// it into lines. A line ends at LF, or also, with crEnds, at CRLF or a
// lone CR (text/event-stream); without it a CR before the LF is dropped.
// A CR that is the last byte read so far ends its line at once: an LF
// that comes with the next read is then part of that ending and skipped.
type lineBuffer struct {
	buf        []byte
	base       []byte // the buffer it started with, taken again after a long line
	start, end int    // the unparsed bytes: buf[start:end]
	crEnds     bool
	skipLF     bool
	lines      int // lines cut so far: the last one's number, 1-based
	maxLine    int // the longest line accepted, without its ending
}

// next returns the next complete line, without its ending, or false when
// the buffered bytes hold none. The line is valid until the next fill.
func (lb *lineBuffer) next() ([]byte, bool) {
	seg := lb.buf[lb.start:lb.end]
	if lb.skipLF && len(seg) > 0 {
		lb.skipLF = false
		if seg[0] == '\n' {
			lb.start++
			seg = seg[1:]
		}
	}
	lf := bytes.IndexByte(seg, '\n')
	if lb.crEnds {
		before := seg
		if lf >= 0 {
			before = seg[:lf]
		}
		if cr := bytes.IndexByte(before, '\r'); cr >= 0 {
			switch {
			case cr+1 == len(seg):
				lb.skipLF = true
				lb.start += cr + 1
			case seg[cr+1] == '\n':
				lb.start += cr + 2
			default:
				lb.start += cr + 1
			}
			lb.lines++
			return seg[:cr], true
		}
	}
	if lf < 0 {
		return nil, false
	}
	lb.start += lf + 1
	lb.lines++
	line := seg[:lf]
	if !lb.crEnds && lf > 0 && line[lf-1] == '\r' {
		line = line[:lf-1]
	}
	return line, true
}

// buffered returns the unparsed bytes: after next reported no line, the
// start of a line yet to end.
func (lb *lineBuffer) buffered() []byte { return lb.buf[lb.start:lb.end] }

// overlong reports whether the line being read is already longer than
// maxLine (call it once next reported no line).
func (lb *lineBuffer) overlong() bool { return lb.end-lb.start > lb.maxLine }

// fill reads more of the stream from r, once: it makes room for the
// line being read (up to maxLine and one byte more, to tell a line too
// long) and reads what r has, as r.Read returns it.
//
// A buffer grown for a long line is let go once that line is parsed: a
// stream that sent one long line does not keep its memory for the rest of
// its life.
func (lb *lineBuffer) fill(r io.Reader) (int, error) {
	if lb.start > 0 || (lb.end == 0 && len(lb.buf) > len(lb.base)) {
		unparsed := lb.buf[lb.start:lb.end]
		lb.end = copy(lb.bufFor(len(unparsed)), unparsed)
		lb.start = 0
	}
	if lb.end == len(lb.buf) {
		grown := make([]byte, min(2*len(lb.buf), lb.maxLine+1))
		lb.end = copy(grown, lb.buf[:lb.end])
		lb.buf = grown
	}
	n, err := r.Read(lb.buf[lb.end:])
	lb.end += n
	return n, err
}

// bufFor returns the buffer to keep n unparsed bytes in at its start:
// the one it started with when they fit there, else the current one.
func (lb *lineBuffer) bufFor(n int) []byte {
	if len(lb.buf) > len(lb.base) && n <= len(lb.base)/2 {
		lb.buf = lb.base
	}
	return lb.buf
}

// utf8BOM is the byte order mark that may begin a text/event-stream.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ingestReader reads a stream: it cuts what was read into lines and has
// its format's parser read them.
type ingestReader struct {
	format     ingestFormat
	lines      lineBuffer
	parser     lineParser
	bomChecked bool
}

// newIngestReader returns a reader of format that reads into buf (which
// grows as long lines need) and hands events to sink. maxSize bounds
// each event's data and each line (beyond it by the field name of a
// text/event-stream data line).
func newIngestReader(format ingestFormat, buf []byte, sink eventSink, maxSize int) *ingestReader {
	sr := &ingestReader{format: format, lines: lineBuffer{buf: buf, base: buf, maxLine: maxSize}}
	if format == eventStream {
		sr.lines.crEnds = true
		sr.lines.maxLine += eventStreamLineSlack
		sr.parser = newEventStreamParser(sink, maxSize)
	} else {
		sr.parser = &ndjsonParser{sink: sink}
	}
	return sr
}

// eventStreamLineSlack is how much longer than max_size a line of a
// text/event-stream may be: the field name of a data line as long as
// max_size, and its space.
const eventStreamLineSlack = 16

// lineError is an error of the parser, or of the sink, at a line.
type lineError struct {
	line int // 1-based
	err  error
}

// Error returns the error's message, with its line.
func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }

// Unwrap returns the error of the line.
func (e *lineError) Unwrap() error { return e.err }

// parse parses the complete lines read so far, calling after (to publish
// a full batch) after each. eof, when the body ended whole, also parses
// an ndjson line without its LF (a text/event-stream's incomplete block is
// dropped: its parser is not told). An error of the parser is a
// *lineError; after's is returned as it is.
func (sr *ingestReader) parse(eof bool, after func() error) error {
	if !sr.bomChecked && sr.format == eventStream {
		b := sr.lines.buffered()
		if len(b) < len(utf8BOM) && bytes.HasPrefix(utf8BOM, b) && !eof {
			return nil // perhaps a BOM: read more
		}
		if bytes.HasPrefix(b, utf8BOM) {
			sr.lines.start += len(utf8BOM)
		}
		sr.bomChecked = true
	}
	for {
		l, ok := sr.lines.next()
		if !ok {
			break
		}
		if len(l) > sr.lines.maxLine {
			return sr.errOverlong(sr.lines.lines)
		}
		if err := sr.parser.line(l); err != nil {
			return &lineError{line: sr.lines.lines, err: err}
		}
		if err := after(); err != nil {
			return err
		}
	}
	if sr.lines.overlong() {
		return sr.errOverlong(sr.lines.lines + 1)
	}
	if eof && sr.format == ndjson && len(sr.lines.buffered()) > 0 {
		l := sr.lines.buffered()
		sr.lines.start = sr.lines.end
		sr.lines.lines++
		if err := sr.parser.line(l); err != nil {
			return &lineError{line: sr.lines.lines, err: err}
		}
	}
	return nil
}

// errTooLarge is wrapped by the parsers' errors of a line or an event over
// max_size; the handler answers them 413, the others 400.
var errTooLarge = errors.New("over max_size")

// sizeError is an error of a line or an event over max_size: its message,
// wrapping errTooLarge.
type sizeError struct{ msg string }

// Error returns the error's message.
func (e *sizeError) Error() string { return e.msg }

// Unwrap returns errTooLarge.
func (e *sizeError) Unwrap() error { return errTooLarge }

// errOverlong refuses a line longer than maxLine.
func (sr *ingestReader) errOverlong(line int) error {
	return &lineError{line: line, err: &sizeError{
		msg: fmt.Sprintf("the line is longer than the %d bytes allowed (max_size)", sr.lines.maxLine)}}
}

// errEventTooLarge refuses an event whose data is over max_size.
func errEventTooLarge(limit int) error {
	return &sizeError{msg: fmt.Sprintf("the event's data is larger than the %d bytes allowed (max_size)", limit)}
}

// fill reads more of the stream from r, once.
func (sr *ingestReader) fill(r io.Reader) (int, error) { return sr.lines.fill(r) }

// eventStreamParser reads text/event-stream lines as the WHATWG HTML
// standard (9.2.6, "Interpreting an event stream") has a browser read
// them: a line starting with ':' is a comment; "field: value" (one space
// after the colon is dropped; a line without a colon is a field with an
// empty value); data lines are joined with LF; event names the type;
// retry, all ASCII digits, is the event's own retry (other values are
// ignored); id and unknown fields are ignored (ids are the hub's); a
// blank line dispatches the block, unless it has no data line. Unlike a
// browser, which decodes invalid UTF-8 to U+FFFD, the parser refuses
// data and event types that are not valid UTF-8, event types with NUL,
// and retry values out of the publish bounds: a publish is refused
// rather than silently changed.
type eventStreamParser struct {
	sink    eventSink
	maxData int // the largest data of an event, in bytes

	data    []byte
	hasData bool
	typ     []byte
	retry   int64
	ev      ingestEvent
}

func newEventStreamParser(sink eventSink, maxData int) *eventStreamParser {
	return &eventStreamParser{sink: sink, maxData: maxData, retry: -1}
}

// line implements lineParser.
func (p *eventStreamParser) line(l []byte) error {
	if len(l) == 0 {
		return p.dispatch()
	}
	if l[0] == ':' {
		return nil
	}
	field, value := l, l[len(l):]
	if i := bytes.IndexByte(l, ':'); i >= 0 {
		field, value = l[:i], l[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		return p.addData(value)
	case "event":
		if err := validateEventTypeBytes(value); err != nil {
			return err
		}
		p.typ = append(p.typ[:0], value...)
	case "retry":
		n, digits := parseDigits(value)
		if !digits {
			return nil // ignored, as a browser ignores it
		}
		if n < minRetry || n > maxRetry {
			_, err := parseRetry(string(value), string(value))
			return err
		}
		p.retry = n
	}
	return nil
}

// addData adds a data line to the block.
func (p *eventStreamParser) addData(value []byte) error {
	size := len(p.data) + len(value)
	if p.hasData {
		size++
	}
	if size > p.maxData {
		return errEventTooLarge(p.maxData)
	}
	if !utf8.Valid(value) {
		return errors.New("data is not valid UTF-8")
	}
	if p.hasData {
		p.data = append(p.data, '\n')
	}
	p.data = append(p.data, value...)
	p.hasData = true
	return nil
}

// dispatch ends the block: an event if it has data.
func (p *eventStreamParser) dispatch() error {
	var err error
	if p.hasData {
		p.ev = ingestEvent{typ: p.typ, data: p.data, retry: p.retry}
		err = p.sink.event(&p.ev)
	}
	if cap(p.data) > largeEventBuffer {
		p.data = nil // a large event's buffer is not kept for small ones
	}
	p.data, p.typ, p.retry, p.hasData = p.data[:0], p.typ[:0], -1, false
	return err
}

// largeEventBuffer is the largest buffer a parser keeps from one event to
// the next.
const largeEventBuffer = 64 << 10

// parseDigits reads a non-empty string of ASCII digits; a number too
// large for the retry bounds is reported as maxRetry+1.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n <= maxRetry {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, maxRetry+1), true
}

// ndjsonParser reads application/x-ndjson: one event a line, a JSON
// object with the fields of a JSON publish (topic, event or type, data,
// retry); blank lines are skipped.
type ndjsonParser struct {
	sink eventSink

	data []byte
	typ  []byte
	ev   ingestEvent
}

// line implements lineParser.
func (p *ndjsonParser) line(l []byte) error {
	if len(bytes.Trim(l, " \t\r")) == 0 {
		return nil
	}
	if !utf8.Valid(l) {
		return errors.New("the line is not valid UTF-8")
	}
	var jm *jsonMessage
	if err := decodeStrictJSON(l, &jm); err != nil {
		return jsonError("", err)
	}
	if jm == nil {
		return errors.New(`the line is null: each line is one event, a JSON object such as {"data": "hello"}`)
	}
	d, err := jm.draft()
	if err != nil {
		return err
	}
	p.data = append(p.data[:0], d.data...)
	p.typ = append(p.typ[:0], d.typ...)
	p.ev = ingestEvent{topics: d.topics, typ: p.typ, data: p.data, retry: d.retry}
	err = p.sink.event(&p.ev)
	if cap(p.data) > largeEventBuffer {
		p.data = nil
	}
	return err
}

// Interface guards
var (
	_ lineParser = (*eventStreamParser)(nil)
	_ lineParser = (*ndjsonParser)(nil)
)
