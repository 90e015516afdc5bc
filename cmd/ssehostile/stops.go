//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// stuckTopic is the topic of the HTTP/2 clients that never read.
const stuckTopic = "full"

// stuckH2 is attack 3a: scale HTTP/2 clients over TLS, each on a
// connection of its own with a small receive buffer and windows at their
// largest, open a stream and never read; then --events events of
// --event-size bytes are published to their topic, more than their
// sockets hold.
func stuckH2(ctx context.Context, r *runner) error {
	path := "/events?topic=" + stuckTopic
	failed := openAll(ctx, r, r.cfg.scale, func() (net.Conn, error) {
		conn, err := dialH2(ctx, r.c.httpsAddr(), r.c.roots)
		if err != nil {
			return nil, err
		}
		return conn, openStuckH2(conn, r.c.httpsAddr(), path)
	})
	if failed > 0 {
		return fmt.Errorf("%d of %d HTTP/2 clients failed", failed, r.cfg.scale)
	}
	if _, err := r.c.waitSubscribers(ctx, 30*time.Second, func(n int) bool { return n >= r.cfg.scale+1 }); err != nil {
		return err
	}
	return publishLarge(ctx, r)
}

// publishLarge publishes --events events of --event-size bytes to the
// stuck clients' topic, one request each, and notes how many were
// acknowledged.
func publishLarge(ctx context.Context, r *runner) error {
	data := bytes.Repeat([]byte("f"), r.cfg.eventSize)
	acked := 0
	for range r.cfg.events {
		status, answer, err := post(ctx, r.c.siteURL("/publish?topic="+stuckTopic), "text/plain", "", bytes.NewReader(data))
		if err != nil {
			return errorf("publishing to the stuck clients", err)
		}
		if status != http.StatusOK {
			return errorf("publishing to the stuck clients", statusError(status, answer))
		}
		acked++
	}
	r.note("published", acked)
	return nil
}

// trickleSubscribe is attack 3b: a subscription that announces a body of
// 100,000 bytes, and sends it a byte every 2 s.
func trickleSubscribe(ctx context.Context, r *runner) error {
	return trickle(ctx, r, "GET /events?topic=t HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n")
}

// tricklePublish is attack 3c: a plain publish that announces a body of
// 100,000 bytes, and sends it a byte every 2 s.
func tricklePublish(ctx context.Context, r *runner) error {
	return trickle(ctx, r, "POST /publish?topic=t HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n")
}

// Trickled bodies.
const (
	trickleLength = 100_000
	trickleEvery  = 2 * time.Second
)

// trickle opens scale connections that send head (with the site's
// address for %s) and a Content-Length of 100,000, then the body a byte
// every 2 s until the end. What the server answers, when it does, is
// noted.
func trickle(ctx context.Context, r *runner, head string) error {
	request := fmt.Sprintf(head, r.c.httpAddr()) + fmt.Sprintf("Content-Length: %d\r\n\r\n", trickleLength)
	var answers tally
	r.onEnd(func() { r.note("answers", answers.snapshot()) })
	r.onClose(func() { r.note("answers_after_stop", answers.snapshot()) }) // before the connections are closed
	failed := openAll(ctx, r, r.cfg.scale, func() (net.Conn, error) {
		conn, err := dial(ctx, r.c.httpAddr(), 0)
		if err != nil {
			return nil, err
		}
		if _, err := conn.Write([]byte(request)); err != nil {
			return conn, err
		}
		go func() { answers.add(outcome(readStatus(conn))) }()
		go trickleBody(conn)
		return conn, nil
	})
	if failed > 0 {
		return fmt.Errorf("%d of %d trickling clients failed", failed, r.cfg.scale)
	}
	time.Sleep(300 * time.Millisecond) // the handler is reading the body
	return nil
}

// trickleBody writes a byte every trickleEvery until the body is whole or
// a write fails (the connection was closed).
func trickleBody(conn net.Conn) {
	for range trickleLength {
		time.Sleep(trickleEvery)
		if _, err := conn.Write([]byte("x")); err != nil {
			return
		}
	}
}
