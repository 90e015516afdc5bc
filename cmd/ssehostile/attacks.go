//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// publishTimeout bounds one request of an attack that publishes.
const publishTimeout = 10 * time.Minute

// idemStream is attack 1a: one streaming publish of scale tiny events
// ("data: x" and a blank line) under one Idempotency-Key.
func idemStream(ctx context.Context, r *runner) error {
	body := &repeatReader{unit: []byte("data: x\n\n"), left: int64(r.cfg.scale) * 9}
	status, answer, err := post(ctx, r.c.siteURL("/publish?topic=t"), "text/event-stream", "k1", body)
	if err != nil {
		return errorf("the streaming publish", err)
	}
	r.note("status", status)
	r.note("answer", excerpt(answer))
	return nil
}

// idemArrays is attack 1b: scale JSON arrays of --batch events, each
// with an Idempotency-Key of its own, over four publishers.
func idemArrays(ctx context.Context, r *runner) error {
	body := jsonArray(r.cfg.batch, "t", "x")
	var next atomic.Int64
	var statuses tally
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < r.cfg.scale && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				status, _, err := post(ctx, r.c.siteURL("/publish"), "application/json", fmt.Sprintf("key-%d", i),
					bytes.NewReader(body))
				statuses.add(outcome(fmt.Sprint(status), err))
			}
		})
	}
	wg.Wait()
	r.note("answers", statuses.snapshot())
	return ctx.Err()
}

// replayFlood is attack 2: --topics topics of --per-topic events of
// --data-size bytes, then scale clients that resume all of them from the
// first event over sockets with a small receive buffer, and never read.
func replayFlood(ctx context.Context, r *runner) error {
	epoch, err := fillTopics(ctx, r)
	if err != nil {
		return err
	}
	path := "/events?" + topicQuery(r.cfg.topics)
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nLast-Event-ID: %s-0\r\n\r\n",
		path, r.c.httpAddr(), epoch)
	start := time.Now()
	failed := openAll(ctx, r, r.cfg.scale, func() (net.Conn, error) {
		conn, err := dial(ctx, r.c.httpAddr(), smallRcvBuf)
		if err != nil {
			return nil, err
		}
		_, err = io.WriteString(conn, request)
		return conn, err
	})
	want := r.cfg.scale - failed + 1 // and the honest subscriber
	n, err := r.c.waitSubscribers(ctx, time.Minute, func(n int) bool { return n >= want })
	r.note("connected", n-1)
	r.note("connect_failures", failed)
	r.note("connect_s", seconds(time.Since(start)))
	if err != nil {
		r.note("connect_error", err.Error())
	}
	return nil
}

// fillTopics publishes --per-topic events to each of --topics topics, in
// arrays of at most 1,000, and returns the hub's epoch from an answer.
func fillTopics(ctx context.Context, r *runner) (string, error) {
	data := strings.Repeat("r", r.cfg.dataSize)
	epoch := ""
	for t := range r.cfg.topics {
		for left := r.cfg.perTopic; left > 0; left -= 1000 {
			body := jsonArray(min(left, 1000), fmt.Sprintf("t%d", t), data)
			status, answer, err := post(ctx, r.c.siteURL("/publish"), "application/json", "", bytes.NewReader(body))
			if err != nil {
				return "", errorf("filling the topics", err)
			}
			if status != http.StatusOK {
				return "", errorf("filling the topics", statusError(status, answer))
			}
			if m := idPattern.FindSubmatch(answer); epoch == "" && m != nil {
				epoch = string(m[1])
			}
		}
	}
	if epoch == "" {
		return "", fmt.Errorf("no event id in the publish answers")
	}
	return epoch, nil
}

// idPattern finds an event id, <epoch>-<seq>, in a publish's answer.
var idPattern = regexp.MustCompile(`"([0-9A-Za-z]+)-[0-9]+"`)

// topicQuery is the query of a subscription to t0 … t(n-1).
func topicQuery(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("topic=t%d", i)
	}
	return strings.Join(parts, "&")
}

// pubBuffers is attack 4: scale streaming publishes, each holding an
// incomplete line of --line bytes of x after "data: ", kept open. A
// stream answered within 150 ms of its headers is refused and sends no
// body; the others send their line.
func pubBuffers(ctx context.Context, r *runner) error {
	chunk := []byte(fmt.Sprintf("%x\r\ndata: %s", 6+r.cfg.line, strings.Repeat("x", r.cfg.line)))
	head := fmt.Sprintf("POST /publish?topic=pb HTTP/1.1\r\nHost: %s\r\nContent-Type: text/event-stream\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n", r.c.httpAddr())
	var answers tally
	var accepted atomic.Int64
	r.onEnd(func() { r.note("answers", answers.snapshot()) })
	r.onClose(func() { r.note("answers_after_stop", answers.snapshot()) }) // before the streams are closed
	failed := openAll(ctx, r, r.cfg.scale, func() (net.Conn, error) {
		conn, err := dial(ctx, r.c.httpAddr(), 0)
		if err != nil {
			return nil, err
		}
		if err := holdLine(conn, head, chunk, &answers); err != nil {
			return conn, err
		}
		accepted.Add(1)
		return conn, nil
	})
	time.Sleep(time.Second) // answers to the last streams
	r.note("accepted", accepted.Load())
	r.note("not_accepted", failed)
	return nil
}

// holdLine sends a streaming publish's headers on conn and, unless it is
// answered within 150 ms, its incomplete line. The answer, whenever it
// comes, is counted in answers. A refusal is errRefused.
func holdLine(conn net.Conn, head string, chunk []byte, answers *tally) error {
	if _, err := io.WriteString(conn, head); err != nil {
		return err
	}
	status := make(chan string, 1)
	go func() {
		code, err := readStatus(conn)
		answers.add(outcome(code, err))
		status <- code
	}()
	select {
	case code := <-status:
		return fmt.Errorf("%w: status %s", errRefused, code)
	case <-time.After(150 * time.Millisecond):
	}
	_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := conn.Write(chunk)
	return err
}

// errRefused is a stream answered before it sent its body.
var errRefused = fmt.Errorf("refused")

// openAll opens n attack connections with open, 16 at a time, registers
// them to be closed at the end, and returns how many failed.
func openAll(ctx context.Context, r *runner, n int, open func() (net.Conn, error)) int {
	var failed atomic.Int64
	var errs tally
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(16, n) {
		wg.Go(func() {
			for int(next.Add(1)) <= n && ctx.Err() == nil {
				conn, err := open()
				if conn != nil {
					r.onClose(func() { conn.Close() })
				}
				if err != nil {
					failed.Add(1)
					errs.add(shortError(err))
				}
			}
		})
	}
	wg.Wait()
	if e := errs.snapshot(); len(e) > 0 {
		r.note("open_errors", e)
	}
	return int(failed.Load())
}

// post sends a publish and returns its status and answer. A key is sent
// as the Idempotency-Key.
func post(ctx context.Context, url, contentType, key string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := publishClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, answer, err
}

// publishClient is the attacks' publisher: keep-alive connections, a
// bounded round trip.
var publishClient = &http.Client{Timeout: publishTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// jsonArray is a JSON array of n events of topic with data (which needs
// no escaping).
func jsonArray(n int, topic, data string) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"topic":%q,"data":%q}`, topic, data)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// excerpt is the start of an answer, for a note.
func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// repeatReader reads unit again and again, left bytes in all.
type repeatReader struct {
	unit []byte
	pos  int
	left int64
}

// Read implements io.Reader.
func (rr *repeatReader) Read(p []byte) (int, error) {
	if rr.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > rr.left {
		p = p[:rr.left]
	}
	n := 0
	for n < len(p) {
		k := copy(p[n:], rr.unit[rr.pos:])
		n += k
		rr.pos = (rr.pos + k) % len(rr.unit)
	}
	rr.left -= int64(n)
	return n, nil
}
