//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The subscribers' protocols (--proto). Every subscriber has a connection
// of its own, as separate browsers do.
const (
	protoH1    = "h1"    // plain HTTP/1.1, written and parsed by hand
	protoH1TLS = "h1tls" // HTTPS with HTTP/1.1 (ALPN http/1.1)
	protoH2    = "h2"    // HTTPS with HTTP/2, one stream per connection
	protoH3    = "h3"    // HTTP/3 over QUIC (quic-go's client)
)

// tlsConfig returns the TLS settings of the tool's HTTPS clients: the
// roots in caFile (or the system's), or no verification at all.
func tlsConfig(caFile string, insecure bool) (*tls.Config, error) {
	conf := &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // on request, for test servers
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading --ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca %s holds no PEM certificate", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

// subTarget is where and how subscribers connect.
type subTarget struct {
	proto   string
	addr    *net.TCPAddr // the server, over TCP
	udpAddr *net.UDPAddr // the server, over QUIC
	host    string       // the Host header, :authority
	request *template    // the request target, path and query, with {topic}
	headers string       // extra header lines, each ending in CRLF
	fields  [][2]string  // the same, for HTTP/2 and HTTP/3: lowercase names
	tls     *tls.Config  // for every protocol but h1, with its ALPN
	h3      *http3.Transport
}

// newSubTarget parses a subscribe URL template: http:// for h1, https://
// for the other protocols. The path and query are kept as written.
func newSubTarget(rawURL string, headers []string, proto string, tlsConf *tls.Config) (*subTarget, error) {
	scheme, host, reqTarget, ok := splitAnyURL(rawURL)
	switch {
	case !ok:
		return nil, fmt.Errorf("--sub-url %q is not an http:// or https:// URL", rawURL)
	case proto == protoH1 && scheme != "http":
		return nil, fmt.Errorf("--sub-url %q: --proto h1 needs an http:// URL", rawURL)
	case proto != protoH1 && scheme != "https":
		return nil, fmt.Errorf("--sub-url %q: --proto %s needs an https:// URL", rawURL, proto)
	}
	t := &subTarget{proto: proto, host: host, request: parseTemplate(reqTarget)}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	addr := dialAddrPort(host, port)
	var err error
	if proto == protoH3 {
		t.udpAddr, err = net.ResolveUDPAddr("udp4", addr)
	} else {
		t.addr, err = net.ResolveTCPAddr("tcp4", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving the --sub-url host: %w", err)
	}
	var hb strings.Builder
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.ContainsAny(h, "\r\n") {
			return nil, fmt.Errorf("--sub-header %q is not of the form 'Name: value'", h)
		}
		hb.WriteString(h)
		hb.WriteString("\r\n")
		t.fields = append(t.fields, [2]string{strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)})
	}
	t.headers = hb.String()
	if proto == protoH1 {
		return t, nil
	}
	t.tls = tlsConf.Clone()
	if t.tls.ServerName == "" {
		t.tls.ServerName, _, _ = net.SplitHostPort(addr)
		t.tls.ServerName = strings.Trim(t.tls.ServerName, "[]")
	}
	switch proto {
	case protoH1TLS:
		t.tls.NextProtos = []string{"http/1.1"}
	case protoH2:
		t.tls.NextProtos = []string{"h2"}
	case protoH3:
		t.tls.NextProtos = []string{http3.NextProtoH3}
		// the client's settings; each subscriber dials its own QUIC
		// connection and makes a client connection of it
		t.h3 = &http3.Transport{TLSClientConfig: t.tls, DisableCompression: true}
	}
	return t, nil
}

// ip is the server's address.
func (t *subTarget) ip() net.IP {
	if t.udpAddr != nil {
		return t.udpAddr.IP
	}
	return t.addr.IP
}

// requestFor returns the HTTP/1.1 GET request of a subscriber to topic.
func (t *subTarget) requestFor(topic string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, "GET "...)
	b = t.request.expand(b, escapeQuery, topic, nil, 0)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.host...)
	b = append(b, "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: ssebench\r\n"...)
	b = append(b, t.headers...)
	return append(b, "\r\n"...)
}

// pathFor returns the request target of a subscriber to topic.
func (t *subTarget) pathFor(topic string) string {
	return string(t.request.expand(nil, escapeQuery, topic, nil, 0))
}

// splitAnyURL splits an http:// or https:// URL into its scheme, host and
// request target.
func splitAnyURL(rawURL string) (scheme, host, target string, ok bool) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return "", "", "", false
	}
	host, target = rest, "/"
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		host, target = rest[:i], rest[i:]
		if target[0] == '?' {
			target = "/" + target
		}
	}
	return scheme, host, target, host != ""
}

// dialAddrPort returns host with a port, port by default.
func dialAddrPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// dialTCP connects a subscriber's TCP connection, from its source
// address.
func (s *subscriber) dialTCP(ctx context.Context) (net.Conn, error) {
	p := s.pool
	d := net.Dialer{Timeout: p.dialTimeout, KeepAlive: -1}
	if len(p.sources) > 0 {
		d.LocalAddr = p.sources[s.id%len(p.sources)]
	}
	return d.DialContext(ctx, "tcp4", s.target().addr.String())
}

// dialH1 opens a plain HTTP/1.1 stream; its body is read by a poller or
// by read.
func (s *subscriber) dialH1(ctx context.Context) error {
	conn, err := s.dialTCP(ctx)
	if err != nil {
		return err
	}
	return s.startH1(conn)
}

// dialH1TLS opens an HTTPS stream with HTTP/1.1; its body is read by
// read, through the TLS connection.
func (s *subscriber) dialH1TLS(ctx context.Context) error {
	conn, err := s.dialTLS(ctx, "http/1.1")
	if err != nil {
		return err
	}
	return s.startH1(conn)
}

// dialTLS connects over TCP and completes a TLS handshake that must
// settle on alpn.
func (s *subscriber) dialTLS(ctx context.Context, alpn string) (*tls.Conn, error) {
	raw, err := s.dialTCP(ctx)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, s.target().tls)
	hctx, cancel := context.WithTimeout(ctx, s.pool.dialTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	if got := conn.ConnectionState().NegotiatedProtocol; got != alpn {
		conn.Close()
		return nil, fmt.Errorf("the server chose protocol %q, not %s", got, alpn)
	}
	return conn, nil
}

// startH1 sends the request on a connection and reads the response
// headers.
func (s *subscriber) startH1(conn net.Conn) error {
	p := s.pool
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	s.reader = conn
	s.buf = make([]byte, p.bufSize)
	_ = conn.SetDeadline(time.Now().Add(p.dialTimeout))
	if _, err := conn.Write(s.target().requestFor(topicName(s.topic))); err != nil {
		conn.Close()
		return fmt.Errorf("sending the request: %w", err)
	}
	body, chunked, err := readHead(conn, s.buf)
	if err != nil {
		conn.Close()
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	s.p = newStreamParser(chunked, s.onEvent)
	return s.feedFirst(body)
}

// feedFirst parses the body bytes that came with the headers.
func (s *subscriber) feedFirst(body []byte) error {
	if len(body) == 0 {
		return nil
	}
	s.now = since()
	s.arrival = s.now
	if err := s.p.feed(body); err != nil {
		s.closeConn()
		return fmt.Errorf("reading the stream: %w", err)
	}
	return nil
}

// dialH2 opens an HTTPS connection with HTTP/2 and its one stream; the
// stream is read by readH2.
func (s *subscriber) dialH2(ctx context.Context) error {
	conn, err := s.dialTLS(ctx, "h2")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	_ = conn.SetDeadline(time.Now().Add(s.pool.dialTimeout))
	t := s.target()
	h, err := openH2(conn, t.host, t.pathFor(topicName(s.topic)), t.fields)
	if err != nil {
		conn.Close()
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	s.h2 = h
	s.p = newStreamParser(false, s.onEvent)
	return nil
}

// dialH3 opens a QUIC connection with HTTP/3 and its one stream; the body
// is read by read.
func (s *subscriber) dialH3(ctx context.Context) error {
	p := s.pool
	tr := p.quic[s.id%len(p.quic)]
	dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	qconn, err := tr.Dial(dctx, s.target().udpAddr, s.target().tls, p.quicConf)
	if err != nil {
		return fmt.Errorf("QUIC handshake: %w", err)
	}
	s.mu.Lock()
	s.qconn = qconn
	s.mu.Unlock()
	t := s.target()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet,
		"https://"+t.host+t.pathFor(topicName(s.topic)), nil)
	if err != nil {
		s.closeConn()
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("User-Agent", "ssebench")
	for _, f := range t.fields {
		req.Header.Add(f[0], f[1])
	}
	type answer struct {
		resp *http.Response
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := t.h3.NewClientConn(qconn).RoundTrip(req)
		answered <- answer{resp, err}
	}()
	var a answer
	select {
	case a = <-answered:
	case <-dctx.Done():
		s.closeConn() // the round trip returns
		a = <-answered
		a.err = errors.Join(dctx.Err(), a.err)
	}
	if a.err != nil {
		s.closeConn()
		return fmt.Errorf("the request: %w", a.err)
	}
	if err := checkAnswer(a.resp.StatusCode, a.resp.Proto, a.resp.Header.Get("Content-Type")); err != nil {
		a.resp.Body.Close()
		s.closeConn()
		return err
	}
	s.reader = a.resp.Body
	s.buf = make([]byte, p.bufSize)
	s.p = newStreamParser(false, s.onEvent)
	return nil
}

// checkAnswer checks the status and content type of a stream's answer.
func checkAnswer(status int, proto, contentType string) error {
	if status != http.StatusOK {
		return &statusError{status: status, line: fmt.Sprintf("%s %d", proto, status)}
	}
	if !strings.HasPrefix(strings.ToLower(contentType), "text/event-stream") {
		return fmt.Errorf("content type %q is not text/event-stream", contentType)
	}
	return nil
}

// newQUICTransports opens one UDP socket per source address (or one on
// any address), each carrying the QUIC connections of its subscribers.
func newQUICTransports(sources []*net.TCPAddr) ([]*quic.Transport, error) {
	ips := []net.IP{nil}
	if len(sources) > 0 {
		ips = ips[:0]
		for _, a := range sources {
			ips = append(ips, a.IP)
		}
	}
	var trs []*quic.Transport
	for _, ip := range ips {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
		if err != nil {
			closeQUICTransports(trs)
			return nil, fmt.Errorf("opening a UDP socket: %w", err)
		}
		trs = append(trs, &quic.Transport{Conn: conn})
	}
	return trs, nil
}

// closeQUICTransports closes the transports and their sockets.
func closeQUICTransports(trs []*quic.Transport) {
	for _, tr := range trs {
		_ = tr.Close()
		_ = tr.Conn.Close()
	}
}

// quicConfig is the QUIC configuration of the subscribers: quic-go's
// defaults (flow-control windows growing to 6 MiB a stream and 15 MiB a
// connection, as Chromium's), and an idle timeout longer than a hub's
// heartbeat interval.
func quicConfig(timeout time.Duration) *quic.Config {
	return &quic.Config{HandshakeIdleTimeout: timeout, MaxIdleTimeout: time.Minute}
}
