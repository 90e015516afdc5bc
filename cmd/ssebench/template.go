//go:build linux

package main

import (
	"fmt"
	"strconv"
	"strings"
)

// A template is text with placeholders: {topic} (the topic's name),
// {data} (the event's data) and {seq} (the event's number in its run).
type template struct {
	texts []string // len(holes)+1 pieces of text around the holes
	holes []hole
}

type hole uint8

const (
	holeTopic hole = iota
	holeData
	holeSeq
)

var placeholders = map[string]hole{"{topic}": holeTopic, "{data}": holeData, "{seq}": holeSeq}

// parseTemplate splits s at its placeholders; other braces are text.
func parseTemplate(s string) *template {
	t := new(template)
	var text strings.Builder
	for len(s) > 0 {
		if s[0] == '{' {
			if h, n, ok := placeholderAt(s); ok {
				t.texts = append(t.texts, text.String())
				t.holes = append(t.holes, h)
				text.Reset()
				s = s[n:]
				continue
			}
		}
		text.WriteByte(s[0])
		s = s[1:]
	}
	t.texts = append(t.texts, text.String())
	return t
}

func placeholderAt(s string) (hole, int, bool) {
	for name, h := range placeholders {
		if strings.HasPrefix(s, name) {
			return h, len(name), true
		}
	}
	return 0, 0, false
}

// expand appends the template with its placeholders replaced by values
// escaped with esc.
func (t *template) expand(b []byte, esc escaper, topic string, data []byte, seq uint64) []byte {
	for i, text := range t.texts {
		b = append(b, text...)
		if i == len(t.holes) {
			break
		}
		switch t.holes[i] {
		case holeTopic:
			b = esc(b, []byte(topic))
		case holeData:
			b = esc(b, data)
		case holeSeq:
			b = strconv.AppendUint(b, seq, 10)
		}
	}
	return b
}

// An escaper appends a value escaped for where the template puts it.
type escaper func(b, v []byte) []byte

// escaperFor returns the escaper named by --pub-escape; "auto" picks one
// from the content type.
func escaperFor(name, contentType string) (escaper, error) {
	if name == "auto" {
		switch ct := strings.ToLower(contentType); {
		case strings.Contains(ct, "x-www-form-urlencoded"):
			name = "form"
		case strings.Contains(ct, "json"):
			name = "json"
		default:
			name = "none"
		}
	}
	switch name {
	case "form":
		return escapeForm, nil
	case "json":
		return escapeJSON, nil
	case "none":
		return escapeNone, nil
	}
	return nil, fmt.Errorf("--pub-escape %q: want auto, form, json or none", name)
}

func escapeNone(b, v []byte) []byte { return append(b, v...) }

// escapeForm escapes v as a value of a form (a space is '+').
func escapeForm(b, v []byte) []byte { return appendPercent(b, v, true) }

// escapeQuery escapes v as part of a URL's query.
func escapeQuery(b, v []byte) []byte { return appendPercent(b, v, false) }

func appendPercent(b, v []byte, plus bool) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
			b = append(b, c)
		case c == ' ' && plus:
			b = append(b, '+')
		default:
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return b
}

// escapeJSON escapes v as the inside of a JSON string. Runs of bytes
// that need no escape (all of the tool's payload) are copied at once.
func escapeJSON(b, v []byte) []byte {
	const hex = "0123456789abcdef"
	plain := 0 // start of the run not yet copied
	for i, c := range v {
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, v[plain:i]...)
		plain = i + 1
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		}
	}
	return append(b, v[plain:]...)
}
