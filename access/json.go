package access

import (
	"encoding/json"
	"errors"
	"slices"
	"unicode/utf8"
)

// errSyntax is JSON this reader does not follow. It reads JSON that
// encoding/json has checked already: it is not meant to happen.
var errSyntax = errors.New("the claims are not valid JSON")

// appendMembers appends the members of the JSON object s to dst. Strings
// without escapes are slices of s: s is to be a string of its own.
func appendMembers(dst []member, s string) ([]member, error) {
	r := reader{s: s}
	if !r.consume('{') {
		return nil, errNotObject
	}
	if r.consume('}') {
		return dst, r.end()
	}
	for {
		name, ok := r.string()
		if !ok || !r.consume(':') {
			return nil, errSyntax
		}
		m, ok := r.value()
		if !ok {
			return nil, errSyntax
		}
		m.name = name
		dst = append(dst, m)
		if r.consume('}') {
			return dst, r.end()
		}
		if !r.consume(',') {
			return nil, errSyntax
		}
	}
}

// stringList returns the strings of a member whose value is a JSON array
// of strings, or false when it is not one.
func stringList(m member) ([]string, bool) {
	if m.kind != kindArray {
		return nil, false
	}
	r := reader{s: m.text}
	r.consume('[')
	var buf [8]string
	list := buf[:0]
	if r.consume(']') {
		return []string{}, true
	}
	for {
		s, ok := r.string()
		if !ok {
			return nil, false
		}
		list = append(list, s)
		if r.consume(']') {
			return slices.Clone(list), true
		}
		if !r.consume(',') {
			return nil, false
		}
	}
}

// reader reads JSON values from s.
type reader struct {
	s string
	i int
}

// space skips white space.
func (r *reader) space() {
	for r.i < len(r.s) {
		switch r.s[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// consume skips white space and c, reporting whether c was there.
func (r *reader) consume(c byte) bool {
	r.space()
	if r.i < len(r.s) && r.s[r.i] == c {
		r.i++
		return true
	}
	return false
}

// end returns an error unless only white space is left.
func (r *reader) end() error {
	r.space()
	if r.i != len(r.s) {
		return errSyntax
	}
	return nil
}

// value reads a value, its name not set.
func (r *reader) value() (member, bool) {
	r.space()
	if r.i >= len(r.s) {
		return member{}, false
	}
	start := r.i
	switch c := r.s[r.i]; c {
	case '"':
		s, ok := r.string()
		return member{kind: kindString, text: s}, ok
	case '{', '[':
		ok := r.skipNested()
		k := kindObject
		if c == '[' {
			k = kindArray
		}
		return member{kind: k, text: r.s[start:r.i]}, ok
	case 't':
		return r.literal("true", kindBool)
	case 'f':
		return r.literal("false", kindBool)
	case 'n':
		return r.literal("null", kindNull)
	}
	for r.i < len(r.s) && isNumberByte(r.s[r.i]) {
		r.i++
	}
	return member{kind: kindNumber, text: r.s[start:r.i]}, r.i > start
}

// string reads a string, and returns its value.
func (r *reader) string() (string, bool) {
	quoted, escaped, ok := r.quoted()
	switch {
	case !ok:
		return "", false
	case escaped:
		return unquote(quoted)
	default:
		return quoted[1 : len(quoted)-1], true
	}
}

// quoted reads a string, and returns it with its quotes and escapes,
// and whether it has escapes (or bytes that are not UTF-8).
func (r *reader) quoted() (quoted string, escaped, ok bool) {
	r.space()
	if r.i >= len(r.s) || r.s[r.i] != '"' {
		return "", false, false
	}
	high := false // a byte not ASCII
	for j := r.i + 1; j < len(r.s); j++ {
		switch c := r.s[j]; {
		case c == '\\':
			escaped = true
			j++
		case c == '"':
			quoted = r.s[r.i : j+1]
			r.i = j + 1
			// encoding/json replaces bytes that are not UTF-8 with
			// U+FFFD: unquote does.
			escaped = escaped || high && !utf8.ValidString(quoted)
			return quoted, escaped, true
		case c >= utf8.RuneSelf:
			high = true
		}
	}
	return "", false, false
}

// unquote returns the value of a JSON string with escapes.
func unquote(quoted string) (string, bool) {
	var s string
	err := json.Unmarshal([]byte(quoted), &s)
	return s, err == nil
}

// skipNested skips an object or an array.
func (r *reader) skipNested() bool {
	depth := 0
	for r.i < len(r.s) {
		switch r.s[r.i] {
		case '"':
			if _, _, ok := r.quoted(); !ok {
				return false
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				r.i++
				return true
			}
		}
		r.i++
	}
	return false
}

// literal reads the literal lit, a value of kind k.
func (r *reader) literal(lit string, k kind) (member, bool) {
	if len(r.s)-r.i < len(lit) || r.s[r.i:r.i+len(lit)] != lit {
		return member{}, false
	}
	r.i += len(lit)
	return member{kind: k, text: lit}, true
}

// isNumberByte reports whether c may be in a JSON number.
func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}
