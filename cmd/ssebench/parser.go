//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
)

// Limits of the stream parser: a longer line or event is cut, not kept.
const (
	maxLine      = 64 << 10
	maxEventData = 64 << 10
)

// errBodyEnded is returned by feed for bytes after the last chunk.
var errBodyEnded = errors.New("bytes after the end of the chunked body")

// chunkState is where a chunked decoder is within the body.
type chunkState uint8

const (
	chunkSize    chunkState = iota // hex digits of a chunk's size
	chunkExt                       // extensions after the size, up to LF
	chunkData                      // the chunk's bytes
	chunkDataEnd                   // the CRLF after a chunk's bytes
	chunkTrailer                   // trailer lines after the last chunk
	chunkTrailerLine
	chunkDone
)

// eventFunc receives each dispatched event: its type (empty for
// "message") and its data, both valid only during the call.
type eventFunc func(typ, data []byte)

// streamParser decodes an HTTP/1.1 response body, chunked or not, and the
// event stream inside it. It is fed bytes as they arrive, in pieces of any
// size: chunk boundaries, line ends and reads may fall anywhere. It
// allocates only when a line or an event's data is longer than any
// before on the same stream.
type streamParser struct {
	chunked bool
	state   chunkState
	remain  int64 // bytes left in the current chunk
	sawSize bool  // a hex digit of the current size was read

	line       []byte // a line cut by a chunk or read boundary
	skipLF     bool   // the last line ended with CR: ignore an LF after it
	data       []byte // the current event's data
	hasData    bool
	typ        []byte // the current event's type
	onEvent    eventFunc
	skipEvents bool   // only find the end of a chunked body
	events     uint64 // events dispatched
	comments   uint64 // comment lines (heartbeats)
}

// newStreamParser returns a parser of a body that is chunked or, if not,
// lasts until the connection closes.
func newStreamParser(chunked bool, onEvent eventFunc) *streamParser {
	return &streamParser{chunked: chunked, onEvent: onEvent}
}

// done reports whether the last chunk of a chunked body was read.
func (p *streamParser) done() bool { return p.state == chunkDone }

// feed parses the next bytes of the body.
func (p *streamParser) feed(b []byte) error {
	if !p.chunked {
		p.sse(b)
		return nil
	}
	for len(b) > 0 {
		var err error
		b, err = p.chunk(b)
		if err != nil {
			return err
		}
	}
	return nil
}

// chunk consumes the chunk framing at the start of b, passes chunk data
// on to the event parser, and returns what is left.
func (p *streamParser) chunk(b []byte) ([]byte, error) {
	switch p.state {
	case chunkSize:
		return p.chunkSizeByte(b)
	case chunkExt:
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return nil, nil
		}
		p.endSizeLine()
		return b[i+1:], nil
	case chunkData:
		n := int64(len(b))
		if n > p.remain {
			n = p.remain
		}
		if !p.skipEvents {
			p.sse(b[:n])
		}
		p.remain -= n
		if p.remain == 0 {
			p.state = chunkDataEnd
		}
		return b[n:], nil
	case chunkDataEnd:
		switch b[0] {
		case '\r':
			return b[1:], nil
		case '\n':
			p.state = chunkSize
			return b[1:], nil
		}
		return nil, fmt.Errorf("chunk not followed by CRLF (found %q)", b[0])
	case chunkTrailer, chunkTrailerLine:
		return p.trailer(b), nil
	}
	return nil, errBodyEnded
}

// chunkSizeByte reads one byte of a chunk-size line.
func (p *streamParser) chunkSizeByte(b []byte) ([]byte, error) {
	c := b[0]
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		if p.remain > 1<<40 {
			return nil, errors.New("chunk size too large")
		}
		p.remain = p.remain<<4 | int64(unhex(c))
		p.sawSize = true
	case c == ';' || c == ' ' || c == '\t':
		p.state = chunkExt
	case c == '\r':
	case c == '\n':
		p.endSizeLine()
	default:
		return nil, fmt.Errorf("invalid byte %q in chunk size", c)
	}
	return b[1:], nil
}

// endSizeLine starts the chunk whose size line just ended.
func (p *streamParser) endSizeLine() {
	switch {
	case !p.sawSize:
		p.state = chunkSize // tolerate a blank line
	case p.remain == 0:
		p.state = chunkTrailer
	default:
		p.state = chunkData
	}
	p.sawSize = false
}

// trailer skips trailer lines up to the blank line that ends the body.
func (p *streamParser) trailer(b []byte) []byte {
	for len(b) > 0 {
		c := b[0]
		b = b[1:]
		switch {
		case c == '\r':
		case c == '\n' && p.state == chunkTrailer:
			p.state = chunkDone
			return nil
		case c == '\n':
			p.state = chunkTrailer
		default:
			p.state = chunkTrailerLine
		}
	}
	return nil
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// sse parses event stream bytes: lines end at CRLF, LF or CR.
func (p *streamParser) sse(b []byte) {
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := indexEOL(b)
		if i < 0 {
			if len(p.line)+len(b) <= maxLine {
				p.line = append(p.line, b...)
			}
			return
		}
		line := b[:i]
		if len(p.line) > 0 {
			if len(p.line)+i <= maxLine {
				p.line = append(p.line, line...)
			}
			line = p.line
		}
		p.skipLF = b[i] == '\r'
		b = b[i+1:]
		p.handleLine(line)
		p.line = p.line[:0]
	}
}

// indexEOL returns the index of the first CR or LF in b, or -1.
func indexEOL(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	end := b
	if i >= 0 {
		end = b[:i]
	}
	if j := bytes.IndexByte(end, '\r'); j >= 0 {
		return j
	}
	return i
}

// handleLine interprets one line of the event stream.
func (p *streamParser) handleLine(line []byte) {
	if len(line) == 0 {
		p.dispatch()
		return
	}
	if line[0] == ':' {
		p.comments++
		return
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		if len(p.data)+len(value) <= maxEventData {
			p.data = append(p.data, value...)
		}
		p.hasData = true
	case "event":
		p.typ = append(p.typ[:0], value...)
	}
}

// dispatch ends the current event: one with data goes to onEvent.
func (p *streamParser) dispatch() {
	if p.hasData {
		p.events++
		typ := p.typ
		if string(typ) == "message" {
			typ = nil
		}
		if p.onEvent != nil {
			p.onEvent(typ, p.data)
		}
	}
	p.data = p.data[:0]
	p.typ = p.typ[:0]
	p.hasData = false
}
