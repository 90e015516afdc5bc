package ssetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

// NewClient returns an HTTP client for streams: no overall timeout, no
// transparent decompression (a test sees the bytes as sent).
func NewClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     5 * time.Second,
	}}
}

// NewSmallBufferClient returns a client whose connections have a receive
// buffer of about size bytes, so that a server writing to a client that
// does not read soon finds its socket full. Each request gets its own
// connection.
func NewSmallBufferClient(size int) *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = setReceiveBuffer(fd, size)
		})
		return errors.Join(err, serr)
	}}
	return &http.Client{Transport: &http.Transport{
		DialContext:        d.DialContext,
		DisableCompression: true,
		DisableKeepAlives:  true,
	}}
}

// Stream is an open event stream, read in the background.
type Stream struct {
	Resp   *http.Response
	frames chan frameOrErr
	cancel context.CancelFunc
	parser *Parser
	lastID string // of the frames returned so far
}

type frameOrErr struct {
	f   Frame
	err error
}

// Open sends a GET to url with the given headers and returns once the
// response headers have arrived. The stream is read only when Next is
// called; until then the connection's buffers fill up.
func Open(client *http.Client, url string, header http.Header) (*Stream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range header {
		req.Header[http.CanonicalHeaderKey(k)] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Stream{Resp: resp, cancel: cancel, parser: NewParser(resp.Body)}
	if id := req.Header.Get("Last-Event-ID"); id != "" {
		s.parser.SetLastID(id)
		s.lastID = id
	}
	return s, nil
}

// start reads frames in the background, from the first call to Next on.
func (s *Stream) start() {
	if s.frames != nil {
		return
	}
	s.frames = make(chan frameOrErr, 1024)
	go func() {
		defer close(s.frames)
		for {
			f, err := s.parser.Next()
			s.frames <- frameOrErr{f, err}
			if err != nil {
				return
			}
		}
	}()
}

// ErrTimeout is returned by Next when nothing arrives in time.
var ErrTimeout = errors.New("timed out waiting for the stream")

// Next returns the next frame, waiting at most timeout. At the end of the
// stream it returns io.EOF (or the read error).
func (s *Stream) Next(timeout time.Duration) (Frame, error) {
	s.start()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case fe, ok := <-s.frames:
		if !ok {
			return Frame{}, io.EOF
		}
		if fe.err == nil {
			s.lastID = fe.f.LastID
		}
		return fe.f, fe.err
	case <-t.C:
		return Frame{}, ErrTimeout
	}
}

// NextEvent returns the next dispatched event, skipping other frames.
func (s *Stream) NextEvent(timeout time.Duration) (Frame, error) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := s.Next(time.Until(deadline))
		if err != nil || f.Kind == KindEvent {
			return f, err
		}
	}
}

// LastID is the stream's last event id after the frames returned so far.
func (s *Stream) LastID() string { return s.lastID }

// Close ends the stream from the client side.
func (s *Stream) Close() {
	s.cancel()
	_ = s.Resp.Body.Close()
	if s.frames != nil {
		for range s.frames { //nolint:revive // drain so the reader goroutine ends
		}
	}
}

// ReadAll reads every frame until the stream ends or timeout passes.
func (s *Stream) ReadAll(timeout time.Duration) ([]Frame, error) {
	deadline := time.Now().Add(timeout)
	var out []Frame
	for {
		f, err := s.Next(time.Until(deadline))
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("after %d frames: %w", len(out), err)
		}
		out = append(out, f)
	}
}

// OpenT subscribes for a test: it fails the test unless the stream starts
// with status 200, and closes the stream when the test ends. A new
// connection that the server closes before answering (EOF: a server of a
// config being replaced took it as it shut down, just after a reload) is
// tried again, twice at most, as an EventSource would.
func OpenT(t testing.TB, client *http.Client, url string, header http.Header) *Stream {
	t.Helper()
	s, err := Open(client, url, header)
	for attempt := 1; attempt < 3 && errors.Is(err, io.EOF); attempt++ {
		s, err = Open(client, url, header)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if s.Resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(s.Resp.Body)
		t.Fatalf("GET %s: %d %s", url, s.Resp.StatusCode, b)
	}
	return s
}

// EventT returns the stream's next event, or fails the test.
func (s *Stream) EventT(t testing.TB, timeout time.Duration) Frame {
	t.Helper()
	f, err := s.NextEvent(timeout)
	if err != nil {
		t.Fatalf("waiting for an event: %v", err)
	}
	return f
}

// doTimeout is the safety net of DoT: an answer that never ends (a stream
// answered where a refusal was expected) fails the test instead of
// hanging it.
const doTimeout = 30 * time.Second

// DoT sends req with the default client and returns the status, headers
// and whole body of the answer, failing the test if there is none.
func DoT(t testing.TB, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	return DoWithT(t, http.DefaultClient, req)
}

// DoWithT is DoT with client.
func DoWithT(t testing.TB, client *http.Client, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), doTimeout)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// RedisAddr is the address of the shared Redis of the tests:
// $SSE_REDIS_ADDR, else 127.0.0.1:6379. The tests use it under key
// prefixes of their own, and delete their keys.
func RedisAddr() string {
	if addr := os.Getenv("SSE_REDIS_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}
