//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Flow-control windows of the HTTP/2 subscribers: Chromium's, so that the
// server's view of a subscriber is a browser's. Credit goes back once half
// a stream's window has been read, in one WINDOW_UPDATE for the stream and
// one for the connection, as Chromium does.
const (
	h2StreamWindow = 6 << 20
	h2ConnWindow   = 15 << 20
	h2StreamID     = 1
)

// h2Stream is a subscriber's HTTP/2 connection and its one stream: a
// minimal client, read by the subscriber's goroutine, that answers the
// server's SETTINGS and PINGs and gives flow-control credit back as it
// reads.
type h2Stream struct {
	conn    net.Conn
	bw      *bufio.Writer
	fr      *http2.Framer
	unacked uint32 // bytes of DATA read since the last WINDOW_UPDATE
}

// openH2 sends the connection preface, the client's settings and the
// GET request of path, and reads frames until the response headers,
// which must be a 200 event stream.
func openH2(conn net.Conn, authority, path string, fields [][2]string) (*h2Stream, error) {
	h := &h2Stream{conn: conn, bw: bufio.NewWriterSize(conn, 1024)}
	h.fr = http2.NewFramer(h.bw, conn)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 64 << 10
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range append([][2]string{
		{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", path},
		{"accept", "text/event-stream"}, {"cache-control", "no-cache"}, {"user-agent", "ssebench"},
	}, fields...) {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return nil, err
		}
	}
	_, _ = h.bw.WriteString(http2.ClientPreface)
	err := errors.Join(
		h.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow}),
		h.fr.WriteWindowUpdate(0, h2ConnWindow-65535),
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h2StreamID, BlockFragment: block.Bytes(),
			EndStream: true, EndHeaders: true}),
		h.bw.Flush())
	if err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("reading the response headers: %w", err)
		}
		if err := h.control(f); err != nil {
			return nil, err
		}
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok || mh.StreamID != h2StreamID {
			continue
		}
		if err := checkAnswer(statusOf(mh), "HTTP/2.0", contentType(mh)); err != nil {
			return nil, err
		}
		if mh.StreamEnded() {
			return nil, errors.New("the stream ended with its headers")
		}
		return h, nil
	}
}

// statusOf returns the :status of a response's headers, 0 if malformed.
func statusOf(mh *http2.MetaHeadersFrame) int {
	n := 0
	for _, c := range mh.PseudoValue("status") {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// contentType returns the content-type field of a response's headers.
func contentType(mh *http2.MetaHeadersFrame) string {
	for _, f := range mh.RegularFields() {
		if f.Name == "content-type" {
			return f.Value
		}
	}
	return ""
}

// control handles the frames that are not the stream's data: it
// acknowledges SETTINGS and PINGs, and turns the stream's end into an
// error.
func (h *h2Stream) control(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			return errors.Join(h.fr.WriteSettingsAck(), h.bw.Flush())
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			return errors.Join(h.fr.WritePing(true, f.Data), h.bw.Flush())
		}
	case *http2.RSTStreamFrame:
		if f.StreamID == h2StreamID {
			return fmt.Errorf("the server reset the stream: %v", f.ErrCode)
		}
	case *http2.GoAwayFrame:
		if f.LastStreamID < h2StreamID {
			return fmt.Errorf("the server refused the stream: GOAWAY %v", f.ErrCode)
		}
	}
	return nil
}

// next reads frames until data of the stream comes, and returns it; it
// is valid until the next call. At the end of the stream it returns
// errStreamEnded (with the last data, if any), or the error that ended
// it.
func (h *h2Stream) next() ([]byte, error) {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if err := h.control(f); err != nil {
			return nil, err
		}
		d, ok := f.(*http2.DataFrame)
		if !ok || d.StreamID != h2StreamID {
			continue
		}
		if d.StreamEnded() {
			return d.Data(), errStreamEnded
		}
		if err := h.credit(d.Header().Length); err != nil {
			return nil, err
		}
		return d.Data(), nil
	}
}

// credit counts n bytes read and gives them back to the server's windows
// once half a stream window has been read.
func (h *h2Stream) credit(n uint32) error {
	h.unacked += n
	if h.unacked < h2StreamWindow/2 {
		return nil
	}
	n, h.unacked = h.unacked, 0
	return errors.Join(h.fr.WriteWindowUpdate(0, n), h.fr.WriteWindowUpdate(h2StreamID, n), h.bw.Flush())
}
