package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// publisher sends events over keep-alive HTTP connections.
type publisher struct {
	url         *template
	body        *template
	contentType string
	esc         escaper
	header      http.Header
	size        int
	client      *http.Client
}

// pubOptions configure a publisher.
type pubOptions struct {
	url, body, contentType, escape string
	headers                        []string
	size, conns                    int
	timeout                        time.Duration
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
	dialer := &net.Dialer{Timeout: o.timeout, KeepAlive: -1}
	transport := &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConns:          o.conns,
		MaxIdleConnsPerHost:   o.conns,
		IdleConnTimeout:       time.Minute,
		DisableCompression:    true,
		ResponseHeaderTimeout: o.timeout,
	}
	return &publisher{
		url:         parseTemplate(o.url),
		body:        parseTemplate(o.body),
		contentType: o.contentType,
		esc:         esc,
		header:      header,
		size:        o.size,
		client:      &http.Client{Transport: transport, Timeout: o.timeout},
	}, nil
}

// pubScratch holds one worker's buffers.
type pubScratch struct {
	data, body, url []byte
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

// close closes the idle connections.
func (p *publisher) close() { p.client.CloseIdleConnections() }
