//go:build unix

package browser

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// env is how the tests of a run reach their sites: plain HTTP/1.1 (the
// tests' own top-level runs), or HTTPS with Caddy's internal CA over
// HTTP/2 or HTTP/3 (TestOverHTTPS).
type env struct {
	name   string // http1, h2, h3
	secure bool
	alpn   string // the protocol DevTools reports for a request: http/1.1, h2, h3
	proto  string // what Caddy's {http.request.proto} says: HTTP/1.1, HTTP/2.0, HTTP/3.0
	// the storage that every Caddy of a secure run shares, so that they
	// all serve one certificate, the one the browser is told to accept
	storage string
	br      *chromium // the run's browser, a tab per test; nil: each test starts its own
	shift   int       // added to each test's number, for its ports
	global  string    // more global options for every Caddy of the run
}

// plain is the tests' own run: plain HTTP/1.1, a browser per test.
var plain = &env{name: "http1", alpn: "http/1.1", proto: "HTTP/1.1"}

// ports returns the ports of test number n in this run.
func (e *env) ports(n int) ports { return testPorts(n + e.shift) }

// base is the origin of the site of a test with ports p: http://127.0.0.1
// on its HTTP port, or https://127.0.0.1 on its HTTPS port.
func (e *env) base(p ports) string {
	if e.secure {
		return fmt.Sprintf("https://127.0.0.1:%d", p.https)
	}
	return origin(p.http)
}

// caddyfile is the package's caddyfile, with, for a secure run, Caddy's
// internal CA, the run's storage, and no HTTP site for redirects.
func (e *env) caddyfile(p ports, global string, sites ...string) string {
	if e.secure {
		global = e.secureOptions() + "\n\t" + global
	}
	return caddyfile(p, global, sites...)
}

// secureOptions are the global options of a secure run.
func (e *env) secureOptions() string {
	return fmt.Sprintf("local_certs\n\tskip_install_trust\n\tauto_https disable_redirects\n\tstorage file_system %s\n\t%s",
		e.storage, e.global)
}

// site is the site block of a test with ports p in this run: the harness
// page, the directives, /proto answering the protocol each request came
// over, and for a secure run the internal CA's certificate.
func (e *env) site(t *testing.T, p ports, directives string) string {
	t.Helper()
	if e.secure {
		directives = "tls internal\n\t" + directives
	}
	return site(t, e.base(p), directives+`
	handle /proto {
		respond {http.request.proto}
	}`)
}

// restartWait is how long a test waits for a page to come back after a
// restart of Caddy. Over HTTP/3 it can take 20 s: a browser that
// reconnects while the old Caddy is stopping sends its QUIC handshake to
// a socket that drops it (over TCP, its connection would be refused at
// once), and retransmits with growing intervals until the new Caddy
// answers.
func (e *env) restartWait() time.Duration {
	if e.alpn == "h3" {
		return 45 * time.Second
	}
	return wait
}

// browser returns a browser for test t: a new tab of the run's browser,
// or a browser of its own.
func (e *env) browser(t *testing.T) *chromium {
	t.Helper()
	if e.br != nil {
		return e.br.newTab(t)
	}
	return startChromium(t)
}

// checkProtocol checks that the page at base fetches /proto over the
// run's protocol, and that every request the tab made to base and got an
// answer to used it, streams included.
func (e *env) checkProtocol(t *testing.T, c *chromium, base string) {
	t.Helper()
	var got string
	c.mustEval(js(`fetch(%s).then((r) => r.text())`, base+"/proto"), &got)
	if got != e.proto {
		t.Errorf("the page's fetch of /proto came over %q, want %q", got, e.proto)
	}
	e.checkRequests(t, c, base)
}

// checkRequests checks that every request the tab made to base and got an
// answer to used the run's protocol, streams included.
func (e *env) checkRequests(t *testing.T, c *chromium, base string) {
	t.Helper()
	answered := 0
	for _, r := range c.net.requests(base) {
		if r.Status == 0 {
			continue // no answer: refused while Caddy restarted
		}
		answered++
		if r.Protocol != e.alpn {
			t.Errorf("%s %s came over %q, want %q:\n%s", r.Method, r.URL, r.Protocol, e.alpn, c.net)
			return
		}
	}
	if answered == 0 {
		t.Errorf("no request to %s was answered:\n%s", base, c.net)
	}
}

// issueCertificate starts a Caddy with a secure run's storage to have its
// internal CA issue the certificate of 127.0.0.1, which every Caddy of the
// run then serves from that storage, and returns the base64 SHA-256 of
// its public key (SubjectPublicKeyInfo), as Chromium's
// --ignore-certificate-errors-spki-list takes it: QUIC ignores
// --ignore-certificate-errors.
func issueCertificate(t *testing.T, storage string, p ports) string {
	t.Helper()
	e := &env{secure: true, storage: storage}
	c := startCaddy(t, p, e.caddyfile(p, "", fmt.Sprintf("https://127.0.0.1:%d {\n\ttls internal\n\trespond ok\n}", p.https)))
	defer func() { _, _ = c.Terminate(10 * time.Second) }()
	var spki string
	waitUntil(t, wait, "Caddy serves its certificate for 127.0.0.1", func() bool {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", p.https),
			&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the certificate is what is fetched here
		if err != nil {
			return false
		}
		defer conn.Close()
		certs := conn.ConnectionState().PeerCertificates
		if len(certs) == 0 {
			return false
		}
		sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
		spki = base64.StdEncoding.EncodeToString(sum[:])
		return true
	}, nil)
	return spki
}

// quicOrigins lists host:port for Chromium's --origin-to-force-quic-on:
// the HTTPS ports of tests 0 to n-1 of a run.
func (e *env) quicOrigins(n int) string {
	var origins []string
	for i := range n {
		origins = append(origins, fmt.Sprintf("127.0.0.1:%d", e.ports(i).https))
	}
	return strings.Join(origins, ",")
}
