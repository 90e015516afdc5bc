//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// With --pub-stream, each publisher is one streaming publish: a chunked
// POST whose body carries its events as they are due (text/event-stream
// by default, one "data: ..." block per event; or application/x-ndjson),
// answered once the body ends with the number of events published. The
// tool's own raw HTTP/1.1 client writes it (http:// only).

// Defaults of --pub-stream, per content type.
const (
	streamTypeSSE    = "text/event-stream"
	streamTypeNDJSON = "application/x-ndjson"
	streamBodySSE    = "data: {data}\n\n"
	streamBodyNDJSON = `{"topic":"{topic}","data":"{data}"}` + "\n"
)

// streamDefaults sets the content type, body and URL of --pub-stream
// unless the flags gave them.
func (c *config) streamDefaults(setFlags map[string]bool) error {
	if !setFlags["pub-type"] {
		c.pubType = streamTypeSSE
	}
	if !setFlags["pub-body"] {
		c.pubBody = streamBodySSE
		if strings.Contains(c.pubType, "json") {
			c.pubBody = streamBodyNDJSON
		}
	}
	if !strings.Contains(c.pubBody, "{topic}") && !strings.Contains(c.pubURL, "{topic}") {
		sep := "?"
		if strings.Contains(c.pubURL, "?") {
			sep = "&"
		}
		c.pubURL += sep + "topic={topic}"
	}
	switch {
	case c.pubClient != "raw":
		return errors.New("--pub-stream uses the raw client: http:// only")
	case c.publishers%c.topics != 0 && !strings.Contains(c.pubBody, "{topic}"):
		return errors.New("--pub-stream: --publishers must be a multiple of --topics (each stream publishes to one topic)")
	}
	return nil
}

// pubStream is one streaming publish in progress.
type pubStream struct {
	p       *publisher
	topic   string
	conn    net.Conn
	chunk   []byte // events not yet written
	data    []byte
	body    []byte
	events  int      // events added
	pending int      // of which not yet written
	seqs    []uint64 // fanout: the events written, in order
	err     error    // the first write error
}

// openStream connects and sends the headers of a streaming publish whose
// URL is the publisher's, with topic.
func (p *publisher) openStream(topic string) (*pubStream, error) {
	conn, err := net.DialTimeout("tcp", dialAddr(p.host), p.timeout)
	if err != nil {
		return nil, err
	}
	target := p.target.expand(nil, escapeQuery, topic, nil, 0)
	head := "POST " + string(target) + " HTTP/1.1\r\nHost: " + p.host + "\r\nUser-Agent: ssebench\r\n" +
		"Content-Type: " + p.contentType + "\r\nTransfer-Encoding: chunked\r\n" + p.headerLines + "\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sending the headers of a stream: %w", err)
	}
	return &pubStream{p: p, topic: topic, conn: conn, chunk: make([]byte, 0, 32<<10)}, nil
}

// add appends event seq of run, sent at sent, to the chunk being built.
func (s *pubStream) add(run int, seq uint64, topic string, sent time.Duration) {
	s.data = appendPayload(s.data[:0], run, seq, int64(sent), s.p.size)
	s.body = s.p.body.expand(s.body[:0], s.p.esc, topic, s.data, seq)
	s.chunk = append(s.chunk, s.body...)
	s.events++
	s.pending++
}

// flush writes the events added since the last flush, as one chunk.
func (s *pubStream) flush() error {
	if len(s.chunk) == 0 || s.err != nil {
		return s.err
	}
	s.pending = 0
	frame := make([]byte, 0, len(s.chunk)+16)
	frame = strconv.AppendInt(frame, int64(len(s.chunk)), 16)
	frame = append(frame, "\r\n"...)
	frame = append(frame, s.chunk...)
	frame = append(frame, "\r\n"...)
	s.chunk = s.chunk[:0]
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.p.timeout))
	if _, err := s.conn.Write(frame); err != nil {
		s.err = fmt.Errorf("writing to the stream: %w", err)
	}
	return s.err
}

// streamResult is a streaming publish's answer.
type streamResult struct {
	status int // 0: none
	count  int // events the server published
	err    error
}

// finish ends the body and reads the answer.
func (s *pubStream) finish() streamResult {
	defer s.conn.Close()
	if s.err == nil {
		_ = s.flush()
	}
	if s.err == nil {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.p.timeout))
		if _, err := io.WriteString(s.conn, "0\r\n\r\n"); err != nil {
			s.err = fmt.Errorf("ending the stream: %w", err)
		}
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(s.p.timeout))
	resp, err := http.ReadResponse(bufio.NewReader(s.conn), nil)
	if err != nil {
		return streamResult{err: errors.Join(s.err, fmt.Errorf("reading the answer: %w", err))}
	}
	defer resp.Body.Close()
	var a struct {
		Count int    `json:"count"`
		Error string `json:"error"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(body, &a)
	}
	r := streamResult{status: resp.StatusCode, count: a.Count}
	switch {
	case err != nil:
		r.err = fmt.Errorf("%d: reading the answer %q: %w", resp.StatusCode, trimBody(body), err)
	case resp.StatusCode/100 != 2:
		r.err = fmt.Errorf("%d: %s", resp.StatusCode, a.Error)
	case a.Count != s.events:
		r.err = fmt.Errorf("the server published %d events of the %d of the stream", a.Count, s.events)
	}
	return r
}

// streamChunk is how many bytes of events a closed-loop stream gathers
// before it writes them: a relay writes what it has.
const streamChunk = 16 << 10

// runPublishStreams is the publish mode with --pub-stream: each publisher
// writes events to its stream as fast as it can for the duration, in
// chunks of about 16 KiB, then ends it; the rate is the events the
// answers acknowledge over the time until the last answer.
func runPublishStreams(ctx context.Context, c *config, pub *publisher, pr *progress) (*publishReport, error) {
	streams := make([]*pubStream, c.publishers)
	for i := range streams {
		s, err := pub.openStream(topicName(i % c.topics))
		if err != nil {
			for _, o := range streams[:i] {
				o.conn.Close()
			}
			return nil, fmt.Errorf("opening stream %d: %w", i, err)
		}
		streams[i] = s
	}
	var (
		answerLatency histogram
		written       atomic.Uint64
	)
	results := make([]streamResult, len(streams))
	pr.printf("publishing through %d streams for %s", len(streams), c.duration)
	m := newMeter(c.pid, nil)
	end := since() + c.duration
	stop := pr.every(func() string { return fmt.Sprintf("%d written", written.Load()) })
	var wg sync.WaitGroup
	for w, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			const maxEvents = 1 << 40
			topic := topicName(w % c.topics)
			for i := 0; i < maxEvents && since() < end && ctx.Err() == nil; i++ {
				s.add(0, uint64(i*c.publishers+w), topic, since())
				if len(s.chunk) >= streamChunk {
					n := s.pending
					if s.flush() != nil {
						break
					}
					written.Add(uint64(n))
				}
			}
			ended := since()
			results[w] = s.finish()
			answerLatency.record(since() - ended)
		}()
	}
	wg.Wait()
	stop()
	ph := m.stop()
	r := &publishReport{
		Mode:       "publish",
		Label:      c.label,
		Stream:     true,
		Publishers: c.publishers,
		Topics:     c.topics,
		Size:       c.size,
		DurationS:  seconds(ph.wall),
		Statuses:   make(map[string]uint64),
		LatencyMS:  answerLatency.summary(),
		Server:     ph.srv,
		Tool:       ph.tool,
	}
	for _, res := range results {
		r.Published += uint64(res.count)
		name := strconv.Itoa(res.status)
		if res.status == 0 {
			name = "no answer"
		}
		r.Statuses[name]++
		if res.err != nil {
			r.Errors++
			if r.Error == "" {
				r.Error = res.err.Error()
			}
		}
	}
	r.PublishesPer = round(per(float64(r.Published), ph.wall.Seconds()), 0)
	r.Tool.CPUPerPub = perItem(ph.selfCPU, r.Published)
	if r.Server != nil && r.Server.Error == "" {
		r.Server.CPUPerPub = perItem(ph.srvCPU, r.Published)
	}
	return r, ctx.Err()
}

// publishStreamed runs the open-loop schedule of a fanout or search step
// through streams: event i is written, as a chunk of its own, when it is
// due, to a stream of its topic (i mod K), or to stream i mod n when the
// body names the topic. Each stream's answer
// acknowledges its events; the step's publish latency is the time to
// write one.
func (r *fanRun) publishStreamed(ctx context.Context, pub *publisher, n int, start time.Duration) int {
	k := r.topics
	streams := make([]*pubStream, n)
	for j := range streams {
		s, err := pub.openStream(topicName(j % k))
		if err != nil {
			msg := fmt.Sprintf("opening stream %d: %v", j, err)
			r.firstErr.CompareAndSwap(nil, &msg)
			r.errors.Add(uint64(r.total))
			for i := range r.statuses {
				r.statuses[i].Store(-1)
			}
			for _, o := range streams[:j] {
				o.conn.Close()
			}
			return 0
		}
		streams[j] = s
	}
	pick := streamFor(pub, n, k)
	interval := float64(time.Second) / r.rate
	for i := range r.total {
		due := start + time.Duration(float64(i)*interval)
		if !sleep(ctx, due-since()) {
			break
		}
		s := streams[pick(i)]
		begin := since()
		lag := begin - due
		r.lag.record(lag)
		if lag > r.late {
			r.lateCount.Add(1)
		}
		r.lastStart.Store(int64(begin))
		s.add(r.id, uint64(i), topicName(i%k), begin)
		s.seqs = append(s.seqs, uint64(i))
		_ = s.flush()
		r.pubLatency.record(since() - begin)
		r.statuses[i].Store(-1) // until its stream's answer says otherwise
	}
	for _, s := range streams {
		r.acknowledge(s, s.finish())
	}
	return n
}

// streamFor returns which of n streams carries event i, of topic i mod
// k: one of its topic's (stream j publishes to topic j mod k, and n is a
// multiple of k), or stream i mod n when the body names the topic.
func streamFor(pub *publisher, n, k int) func(i int) int {
	if slices.Contains(pub.body.holes, holeTopic) {
		return func(i int) int { return i % n }
	}
	return func(i int) int { return i%k + k*((i/k)%(n/k)) }
}

// acknowledge records a stream's answer as the status of each event it
// carried (s.seqs): the first res.count of them were published. Its
// events stay unanswered (-1) unless the answer says otherwise.
func (r *fanRun) acknowledge(s *pubStream, res streamResult) {
	for idx, seq := range s.seqs {
		switch {
		case idx < res.count && res.status/100 == 2:
			r.statuses[seq].Store(int32(res.status)) // acknowledged
		case res.status/100 != 2 && res.status != 0:
			r.statuses[seq].Store(int32(res.status))
		}
	}
	if res.err != nil {
		r.errors.Add(uint64(len(s.seqs) - min(res.count, len(s.seqs))))
		msg := res.err.Error()
		r.firstErr.CompareAndSwap(nil, &msg)
	}
}
