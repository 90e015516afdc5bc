//go:build linux

package main

import (
	"bytes"
	"strconv"
)

// The data of every event the tool publishes is
//
//	ssb:<run>:<seq>:<sent>:xxxx...
//
// run numbers the measured phase (a search has several), seq is the
// event's number within the run (it was published to topic seq mod K),
// sent is when the publish request started, in nanoseconds since the
// tool started (monotonic), and x's pad the data to the requested size.
// The marker is looked for anywhere in the data, so that hubs that wrap
// the published data (in JSON, say) can be measured as well.
var payloadMarker = []byte("ssb:")

// appendPayload appends the data of one event, padded to size bytes.
func appendPayload(b []byte, run int, seq uint64, sentNS int64, size int) []byte {
	start := len(b)
	b = append(b, payloadMarker...)
	b = strconv.AppendInt(b, int64(run), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, sentNS, 10)
	b = append(b, ':')
	for len(b)-start < size {
		b = append(b, padding[:min(size-(len(b)-start), len(padding))]...)
	}
	return b
}

// padding pads the data of an event, a piece at a time.
const padding = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

// parsePayload reads the fields of data made by appendPayload.
func parsePayload(data []byte) (run int, seq uint64, sentNS int64, ok bool) {
	i := bytes.Index(data, payloadMarker)
	if i < 0 {
		return 0, 0, 0, false
	}
	rest := data[i+len(payloadMarker):]
	r, rest, ok1 := parseUint(rest)
	s, rest, ok2 := parseUint(rest)
	t, _, ok3 := parseUint(rest)
	if !ok1 || !ok2 || !ok3 || r > 1<<31 || t > 1<<62 {
		return 0, 0, 0, false
	}
	return int(r), s, int64(t), true
}

// parseUint reads decimal digits followed by ':'.
func parseUint(b []byte) (uint64, []byte, bool) {
	var n uint64
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9' && i < 19:
			n = n*10 + uint64(c-'0')
		case c == ':' && i > 0:
			return n, b[i+1:], true
		default:
			return 0, nil, false
		}
	}
	return 0, nil, false
}
