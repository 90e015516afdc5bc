// Package ssetest holds test helpers for caddy-sse: an event stream parser
// that follows the WHATWG "Server-sent events" processing model to the
// letter, and a client that reads streams over real HTTP connections.
package ssetest

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"time"
)

// Kind tells what a Frame is.
type Kind int

// Frame kinds.
const (
	// KindEvent is a dispatched event.
	KindEvent Kind = iota
	// KindComment is a comment line.
	KindComment
	// KindRetry is a retry field that set the reconnection time.
	KindRetry
	// KindID is a block that changed the last event id without
	// dispatching an event.
	KindID
)

// Frame is one thing a client observes on a stream.
type Frame struct {
	Kind    Kind
	Type    string // event type, "message" by default
	Data    string
	LastID  string // the stream's last event id after this frame
	Retry   int    // for KindRetry, in ms
	Comment string
	At      time.Time // when the line that completed it was read
}

// Parser is the WHATWG event stream interpretation: it keeps the data
// buffer, event type buffer and last event id buffer across lines.
type Parser struct {
	r          *bufio.Reader
	first      bool
	data       strings.Builder
	eventType  string
	lastIDBuf  string
	lastID     string
	idChanged  bool
	pending    []Frame
	pendingCR  bool
	lineBuffer []byte
}

// NewParser reads a stream from r.
func NewParser(r io.Reader) *Parser {
	return &Parser{r: bufio.NewReader(r), first: true}
}

// SetLastID sets the last event id a reconnecting client starts with.
func (p *Parser) SetLastID(id string) {
	p.lastID, p.lastIDBuf = id, id
}

// LastID is the stream's last event id string.
func (p *Parser) LastID() string { return p.lastID }

// Next returns the next frame, or an error when the stream ends.
func (p *Parser) Next() (Frame, error) {
	for len(p.pending) == 0 {
		line, err := p.readLine()
		if err != nil {
			return Frame{}, err
		}
		p.processLine(line)
	}
	f := p.pending[0]
	p.pending = p.pending[1:]
	return f, nil
}

// readLine reads one line ending in CRLF, LF or CR, without its ending.
// A line that the stream ends in the middle of is not returned.
func (p *Parser) readLine() (string, error) {
	p.lineBuffer = p.lineBuffer[:0]
	for {
		c, err := p.r.ReadByte()
		if err != nil {
			return "", err
		}
		if p.first {
			p.first = false
			// a leading BOM is skipped
			if c == 0xEF {
				rest, _ := p.r.Peek(2)
				if len(rest) == 2 && rest[0] == 0xBB && rest[1] == 0xBF {
					_, _ = p.r.Discard(2)
					continue
				}
			}
		}
		if p.pendingCR {
			p.pendingCR = false
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\n':
			return string(p.lineBuffer), nil
		case '\r':
			p.pendingCR = true
			return string(p.lineBuffer), nil
		}
		p.lineBuffer = append(p.lineBuffer, c)
	}
}

func (p *Parser) processLine(line string) {
	now := time.Now()
	switch {
	case line == "":
		p.dispatch(now)
		return
	case line[0] == ':':
		p.pending = append(p.pending, Frame{Kind: KindComment, Comment: line[1:], LastID: p.lastID, At: now})
		return
	}
	field, value, found := strings.Cut(line, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch field {
	case "event":
		p.eventType = value
	case "data":
		p.data.WriteString(value)
		p.data.WriteByte('\n')
	case "id":
		if !strings.ContainsRune(value, 0) {
			p.lastIDBuf = value
		}
	case "retry":
		if value != "" && strings.Trim(value, "0123456789") == "" {
			if ms, err := strconv.Atoi(value); err == nil {
				p.pending = append(p.pending, Frame{Kind: KindRetry, Retry: ms, LastID: p.lastID, At: now})
			}
		}
	}
}

// dispatch is the WHATWG "dispatch the event" steps.
func (p *Parser) dispatch(now time.Time) {
	changed := p.lastID != p.lastIDBuf
	p.lastID = p.lastIDBuf
	data := p.data.String()
	if data == "" {
		p.eventType = ""
		if changed {
			p.pending = append(p.pending, Frame{Kind: KindID, LastID: p.lastID, At: now})
		}
		return
	}
	data = strings.TrimSuffix(data, "\n")
	typ := p.eventType
	if typ == "" {
		typ = "message"
	}
	p.pending = append(p.pending, Frame{Kind: KindEvent, Type: typ, Data: data, LastID: p.lastID, At: now})
	p.data.Reset()
	p.eventType = ""
}
