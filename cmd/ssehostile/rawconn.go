//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// smallRcvBuf is the receive buffer of the clients that never read: the
// server's writes fill it, then the server's socket, at once.
const smallRcvBuf = 4096

// dial opens a TCP connection to addr, with a receive buffer of rcvbuf
// bytes set before it connects (0: the system's).
func dial(ctx context.Context, addr string, rcvbuf int) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return conn, nil
}

// dialH2 opens a TLS connection with a small receive buffer to addr and
// checks that HTTP/2 was negotiated.
func dialH2(ctx context.Context, addr string, roots *x509.CertPool) (*tls.Conn, error) {
	raw, err := dial(ctx, addr, smallRcvBuf)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if proto := conn.ConnectionState().NegotiatedProtocol; proto != "h2" {
		conn.Close()
		return nil, fmt.Errorf("negotiated %q, not h2", proto)
	}
	return conn, nil
}

// maxWindow is the largest flow-control window HTTP/2 allows.
const maxWindow = 1<<31 - 1

// openStuckH2 sends the client preface, a SETTINGS frame with the largest
// initial stream window, a WINDOW_UPDATE raising the connection's window
// to the largest, and a GET of path that ends the stream. The connection
// is never read: what the server writes fills the socket.
func openStuckH2(conn net.Conn, authority, path string) error {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority},
		{":path", path}, {"accept", "text/event-stream"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return fmt.Errorf("encoding the headers: %w", err)
		}
	}
	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	err := errors.Join(
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow}),
		fr.WriteWindowUpdate(0, maxWindow-65535),
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}))
	if err != nil {
		return fmt.Errorf("framing the request: %w", err)
	}
	if _, err := conn.Write(out.Bytes()); err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	return nil
}

// readStatus reads the status code of an HTTP/1.1 answer on conn.
func readStatus(conn net.Conn) (string, error) {
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	fields := strings.Fields(line)
	if len(fields) < 2 || !strings.HasPrefix(fields[0], "HTTP/") {
		return "", fmt.Errorf("not an HTTP answer: %q", line)
	}
	return fields[1], nil
}

// tally counts outcomes by name, from several goroutines.
type tally struct {
	mu sync.Mutex
	m  map[string]int
}

// add counts one outcome.
func (t *tally) add(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[name]++
}

// snapshot returns a copy of the counts.
func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int, len(t.m))
	for k, v := range t.m {
		m[k] = v
	}
	return m
}

// outcome names what a read of an answer gave: its status, or the kind
// of error.
func outcome(status string, err error) string {
	switch {
	case err == nil:
		return "status " + status
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, net.ErrClosed):
		return "closed by the tool"
	default:
		return "no answer: " + shortError(err)
	}
}

// shortError is an error's text, at most 80 characters.
func shortError(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
