package caddysse

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// connKey is the context key of the connection a request came on.
type connKey struct{}

// rememberConns makes the http app's servers put each connection in its
// requests' context (Caddy's way for a module to reach them: see
// caddyhttp.ConnCtxKey), so that a stream can reach the connection under
// it. It is called while the http app provisions its handlers, before its
// servers start; several handlers registering cost a context lookup each
// per connection.
func rememberConns(ctx caddy.Context) error {
	appIface, err := ctx.App("http")
	if err != nil {
		return fmt.Errorf("loading http app: %w", err)
	}
	app, ok := appIface.(*caddyhttp.App)
	if !ok {
		return nil
	}
	for _, srv := range app.Servers {
		srv.RegisterConnContext(withConn)
	}
	return nil
}

func withConn(ctx context.Context, c net.Conn) context.Context {
	if ctx.Value(connKey{}) != nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, c)
}

// limitSendBuffer sets the kernel's send buffer of an HTTP/1.x request's
// TCP connection to size bytes (SO_SNDBUF; the kernel doubles it for its
// own bookkeeping), when size is positive and the connection is known.
func limitSendBuffer(r *http.Request, size int64) {
	if r.ProtoMajor != 1 || size <= 0 {
		return
	}
	if tc, ok := tcpConn(r).(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(int(min(size, 1<<30)))
	}
}

// sharedConn returns the TCP connection under an HTTP/2 request, or nil
// for another protocol or when it is not known. Over HTTP/2 a stream
// shares its connection with others and cannot take it over, but when
// the connection's socket is full (its client reads nothing), nothing
// more can be written on it, not even the reset of a stream or the GOAWAY
// of a server that stops: only closing the connection lets the server
// stop (see streamSet.wait).
func sharedConn(r *http.Request) net.Conn {
	if r.ProtoMajor != 2 {
		return nil
	}
	return tcpConn(r)
}

// tcpConn returns the connection under a request, under its TLS, or nil
// when it is not known.
func tcpConn(r *http.Request) net.Conn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	for c != nil {
		switch u := c.(type) {
		case *tls.Conn:
			c = u.NetConn()
		case interface{ NetConn() net.Conn }:
			c = u.NetConn()
		default:
			return c
		}
	}
	return nil
}
