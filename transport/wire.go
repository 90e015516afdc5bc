package transport

import (
	"strconv"
	"strings"
)

// AppendEvent appends the stream form of one event to b: an id field
// unless id is empty (an empty id field would clear the client's last
// event id), an event field unless the type is the default "message", a retry field when
// retry is not negative, one data field per line of data (lines end at
// CRLF, LF or CR) and the blank line that dispatches the event. A field
// with a value has exactly one space after its colon; an empty line of
// data is a bare "data:".
func AppendEvent(b []byte, id, typ string, retry int64, data string) []byte {
	if id != "" {
		b = appendField(b, "id", id)
	}
	if typ != "" && typ != "message" {
		b = appendField(b, "event", typ)
	}
	if retry >= 0 {
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, retry, 10)
		b = append(b, '\n')
	}
	for {
		i := strings.IndexAny(data, "\r\n")
		if i < 0 {
			b = appendField(b, "data", data)
			break
		}
		b = appendField(b, "data", data[:i])
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n')
}

// AppendRetry appends a lone retry field, which sets the client's
// reconnection delay without dispatching an event.
func AppendRetry(b []byte, ms int64) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, "\n\n"...)
}

// AppendComment appends a comment line; clients ignore it.
func AppendComment(b []byte, text string) []byte {
	return appendField(b, "", text)
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ':')
	if value != "" {
		b = append(b, ' ')
		b = append(b, value...)
	}
	return append(b, '\n')
}
