//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// rawClient is one keep-alive HTTP/1.1 connection for publishing,
// without net/http: it writes a request, reads the whole answer, and
// does it again. Far cheaper per request than net/http's client, so that
// the tool is not what limits a publish benchmark.
type rawClient struct {
	addr    string
	timeout time.Duration
	conn    net.Conn
	buf     []byte
}

// rawResponseBuf is the read buffer of a raw client; longer answers are
// read through it.
const rawResponseBuf = 16 << 10

func newRawClient(addr string, timeout time.Duration) *rawClient {
	return &rawClient{addr: addr, timeout: timeout, buf: make([]byte, rawResponseBuf)}
}

// do sends req, a whole request, and returns the answer's status and the
// start of its body. On any error the connection is closed; the next
// request opens another.
func (c *rawClient) do(req []byte) (int, []byte, error) {
	if err := c.dial(); err != nil {
		return 0, nil, err
	}
	status, body, keep, err := c.roundTrip(req)
	if err != nil || !keep {
		c.conn.Close()
		c.conn = nil
	}
	return status, body, err
}

// dial opens the connection unless it is open.
func (c *rawClient) dial() error {
	if c.conn != nil {
		return nil
	}
	conn, err := net.DialTimeout("tcp", c.addr, c.timeout)
	if err != nil {
		return err
	}
	c.conn = conn
	return nil
}

func (c *rawClient) roundTrip(req []byte) (status int, body []byte, keep bool, err error) {
	_ = c.conn.SetDeadline(time.Now().Add(c.timeout))
	if _, err := c.conn.Write(req); err != nil {
		return 0, nil, false, fmt.Errorf("sending the request: %w", err)
	}
	n, end := 0, -1
	for end < 0 {
		if n == len(c.buf) {
			return 0, nil, false, errors.New("answer headers larger than 16KiB")
		}
		m, err := c.conn.Read(c.buf[n:])
		n += m
		end = headEnd(c.buf[:n])
		if err != nil && end < 0 {
			return 0, nil, false, fmt.Errorf("reading the answer: %w", err)
		}
	}
	h, err := parseAnswerHead(c.buf[:end])
	if err != nil {
		return 0, nil, false, err
	}
	body, err = c.readBody(h, c.buf[end:n])
	return h.status, body, h.keepAlive && err == nil, err
}

// answerHead is what a publisher needs of an answer's headers.
type answerHead struct {
	status        int
	contentLength int64 // -1: not given
	chunked       bool
	keepAlive     bool
}

// parseAnswerHead reads the status line and headers of an answer.
func parseAnswerHead(head []byte) (answerHead, error) {
	h := answerHead{contentLength: -1, keepAlive: true}
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return h, fmt.Errorf("not an HTTP/1.x answer: %q", lines[0])
	}
	status, err := strconv.Atoi(f[1])
	if err != nil {
		return h, fmt.Errorf("malformed status line %q", lines[0])
	}
	h.status = status
	h.keepAlive = f[0] != "HTTP/1.0"
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if !ok {
			continue
		}
		value = strings.ToLower(strings.TrimSpace(value))
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			if h.contentLength, err = strconv.ParseInt(value, 10, 64); err != nil || h.contentLength < 0 {
				return h, fmt.Errorf("malformed Content-Length %q", value)
			}
		case "transfer-encoding":
			h.chunked = strings.Contains(value, "chunked")
		case "connection":
			h.keepAlive = value != "close"
		}
	}
	if h.status == 204 || h.status == 304 || h.status/100 == 1 {
		h.contentLength = 0
	}
	return h, nil
}

// readBody reads the rest of the body after the bytes read with the
// headers, and returns up to the first 200 bytes of it.
func (c *rawClient) readBody(h answerHead, got []byte) ([]byte, error) {
	first := append([]byte(nil), got[:min(len(got), 200)]...)
	switch {
	case h.chunked:
		p := newStreamParser(true, nil)
		p.skipEvents = true
		if err := p.feed(got); err != nil {
			return first, err
		}
		for !p.done() {
			m, err := c.conn.Read(c.buf)
			if perr := p.feed(c.buf[:m]); perr != nil {
				return first, perr
			}
			if err != nil && !p.done() {
				return first, fmt.Errorf("reading the answer: %w", err)
			}
		}
		return first, nil
	case h.contentLength >= 0:
		left := h.contentLength - int64(len(got))
		for left > 0 {
			m, err := c.conn.Read(c.buf[:min(int64(len(c.buf)), left)])
			if len(first) < 200 {
				first = append(first, c.buf[:min(m, 200-len(first))]...)
			}
			left -= int64(m)
			if err != nil && left > 0 {
				return first, fmt.Errorf("reading the answer: %w", err)
			}
		}
		return first, nil
	}
	// neither: the body lasts until the server closes
	_, err := io.Copy(io.Discard, c.conn)
	return first, errors.Join(err, errNoKeepAlive)
}

// errNoKeepAlive is an answer whose end is the end of the connection.
var errNoKeepAlive = errors.New("the answer has neither a length nor chunks")

// close closes the connection.
func (c *rawClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// appendRequest appends a POST request with a body.
func appendRequest(b []byte, target, host, contentType, headers string, body []byte) []byte {
	b = append(b, "POST "...)
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: ssebench\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if contentType != "" {
		b = append(b, "\r\nContent-Type: "...)
		b = append(b, contentType...)
	}
	b = append(b, "\r\n"...)
	b = append(b, headers...)
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// splitURL splits an http:// URL into its host and request target.
func splitURL(rawURL string) (host, target string, ok bool) {
	rest, ok := strings.CutPrefix(rawURL, "http://")
	if !ok {
		return "", "", false
	}
	host, target = rest, "/"
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		host, target = rest[:i], rest[i:]
		if target[0] == '?' {
			target = "/" + target
		}
	}
	return host, target, true
}

// dialAddr returns host with a port, 80 by default.
func dialAddr(host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "80")
}

// trimBody shortens an answer for an error message.
func trimBody(b []byte) string {
	return string(bytes.TrimSpace(b))
}
