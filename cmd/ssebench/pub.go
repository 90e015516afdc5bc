//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// publisher sends events over keep-alive HTTP connections: its own raw
// HTTP/1.1 client by default, net/http's for https:// or on request.
type publisher struct {
	url         *template
	body        *template
	batch       *template // one event of an array (burst)
	contentType string
	esc         escaper
	header      http.Header
	size        int
	timeout     time.Duration
	client      *http.Client // nil: the raw client

	// the raw client's
	host        string    // the Host header and, with a port, where to dial
	target      *template // the request target
	headerLines string    // extra header lines, each ending in CRLF
}

// pubOptions configure a publisher.
type pubOptions struct {
	url, body, contentType, escape string
	batch                          string // the template of one event of an array
	headers                        []string
	client                         string // raw or http
	size, conns                    int
	timeout                        time.Duration
	tls                            *tls.Config // for https://
}

// newPublisher checks the options and prepares a client with up to
// o.conns keep-alive connections.
func newPublisher(o pubOptions) (*publisher, error) {
	if !strings.HasPrefix(o.url, "http://") && !strings.HasPrefix(o.url, "https://") {
		return nil, fmt.Errorf("--pub-url %q is not an http:// or https:// URL", o.url)
	}
	esc, err := escaperFor(o.escape, o.contentType)
	if err != nil {
		return nil, err
	}
	header := make(http.Header)
	for _, h := range o.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("--pub-header %q is not of the form 'Name: value'", h)
		}
		header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if o.contentType != "" {
		header.Set("Content-Type", o.contentType)
	}
	p := &publisher{
		url:         parseTemplate(o.url),
		body:        parseTemplate(o.body),
		batch:       parseTemplate(o.batch),
		contentType: o.contentType,
		esc:         esc,
		header:      header,
		size:        o.size,
		timeout:     o.timeout,
	}
	switch o.client {
	case "raw":
		host, target, ok := splitURL(o.url)
		if !ok {
			return nil, fmt.Errorf("--pub-client raw needs an http:// --pub-url; use --pub-client http for %q", o.url)
		}
		p.host, p.target = host, parseTemplate(target)
		for _, h := range o.headers {
			if strings.ContainsAny(h, "\r\n") {
				return nil, fmt.Errorf("--pub-header %q holds a line break", h)
			}
			p.headerLines += h + "\r\n"
		}
		return p, nil
	case "http":
	default:
		return nil, fmt.Errorf("--pub-client %q: want raw or http", o.client)
	}
	dialer := &net.Dialer{Timeout: o.timeout, KeepAlive: -1}
	transport := &http.Transport{
		DialContext:           dialer.DialContext,
		TLSClientConfig:       o.tls,
		MaxIdleConns:          o.conns,
		MaxIdleConnsPerHost:   o.conns,
		IdleConnTimeout:       time.Minute,
		DisableCompression:    true,
		ResponseHeaderTimeout: o.timeout,
	}
	p.client = &http.Client{Transport: transport, Timeout: o.timeout}
	return p, nil
}

// pubScratch holds one worker's buffers and connection.
type pubScratch struct {
	data, body, url, req []byte
	item                 []byte // the data of the array event being added (data keeps the first's)
	raw                  *rawClient
}

// connect opens the raw client's connection ahead of the first publish,
// so that it is not part of what is measured; net/http's client opens
// its own when it needs one.
func (sc *pubScratch) connect(p *publisher) error {
	if p.client != nil {
		return nil
	}
	if sc.raw == nil {
		sc.raw = newRawClient(dialAddr(p.host), p.timeout)
	}
	return sc.raw.dial()
}

// close closes the worker's connection.
func (sc *pubScratch) close() {
	if sc.raw != nil {
		sc.raw.close()
	}
}

// pubResult is the outcome of one publish.
type pubResult struct {
	status int // 0: no answer
	err    error
}

// publish sends event seq of run to topic, with sent (since epoch) as its
// send time.
func (p *publisher) publish(ctx context.Context, sc *pubScratch, run int, seq uint64, topic string, sent time.Duration) pubResult {
	sc.data = appendPayload(sc.data[:0], run, seq, int64(sent), p.size)
	sc.body = p.body.expand(sc.body[:0], p.esc, topic, sc.data, seq)
	return p.send(ctx, sc, topic, seq)
}

// publishBatch sends n events of run, numbered from first, in one
// request: the batch template of each, joined with commas inside
// brackets. Event s goes to topics[s mod len(topics)]; all carry sent as
// their send time. The URL's placeholders are the first event's. The
// body is appended in place, without formatting per event.
func (p *publisher) publishBatch(ctx context.Context, sc *pubScratch, run int, first uint64, n int, topics []string, sent time.Duration) pubResult {
	sc.body = p.appendBatch(sc, run, first, n, topics, sent)
	return p.send(ctx, sc, topics[first%uint64(len(topics))], first)
}

// appendBatch builds the body of publishBatch in sc.body, and the first
// event's data in sc.data.
func (p *publisher) appendBatch(sc *pubScratch, run int, first uint64, n int, topics []string, sent time.Duration) []byte {
	k := uint64(len(topics))
	b := append(sc.body[:0], '[')
	for i := range n {
		seq := first + uint64(i)
		if i > 0 {
			b = append(b, ',')
		}
		sc.item = appendPayload(sc.item[:0], run, seq, int64(sent), p.size)
		b = p.batch.expand(b, p.esc, topics[seq%k], sc.item, seq)
		if i == 0 {
			sc.data = append(sc.data[:0], sc.item...)
		}
	}
	return append(b, ']')
}

// send posts the body in sc; topic, seq and sc.data fill the URL's
// placeholders.
func (p *publisher) send(ctx context.Context, sc *pubScratch, topic string, seq uint64) pubResult {
	if p.client == nil {
		return p.publishRaw(sc, topic, seq)
	}
	sc.url = p.url.expand(sc.url[:0], escapeQuery, topic, sc.data, seq)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, string(sc.url), bytes.NewReader(sc.body))
	if err != nil {
		return pubResult{err: err}
	}
	for k, v := range p.header {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return pubResult{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		_, _ = io.Copy(io.Discard, resp.Body)
		return pubResult{status: resp.StatusCode, err: fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))}
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return pubResult{status: resp.StatusCode, err: fmt.Errorf("reading the answer: %w", err)}
	}
	return pubResult{status: resp.StatusCode}
}

// publishRaw sends the body in sc with the raw client.
func (p *publisher) publishRaw(sc *pubScratch, topic string, seq uint64) pubResult {
	if sc.raw == nil {
		sc.raw = newRawClient(dialAddr(p.host), p.timeout)
	}
	sc.url = p.target.expand(sc.url[:0], escapeQuery, topic, sc.data, seq)
	sc.req = appendRequest(sc.req[:0], string(sc.url), p.host, p.contentType, p.headerLines, sc.body)
	status, body, err := sc.raw.do(sc.req)
	switch {
	case err != nil:
		return pubResult{status: status, err: err}
	case status/100 != 2:
		return pubResult{status: status, err: fmt.Errorf("%d: %s", status, trimBody(body))}
	}
	return pubResult{status: status}
}

// close closes the idle connections of net/http's client.
func (p *publisher) close() {
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
}
