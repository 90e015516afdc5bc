//go:build linux

package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// Ports of TestSmokeProtocols, before SSE_TEST_PORT_OFFSET: its Caddy has
// its admin API on 2701, a plain HTTP site on 8701 (for publishing) and
// the same site over HTTPS on 8702, TCP and UDP.
const (
	protoAdminBase = 2701
	protoHTTPBase  = 8701
	protoHTTPSBase = 8702
)

// TestSmokeProtocols runs the tool's subscribers over HTTPS with
// HTTP/1.1, HTTP/2 and HTTP/3 against Caddy (its internal CA, verified
// with --ca): idle streams, then a fan-out whose every delivery is
// checked, then one of 64 KiB events, more than a stream's flow-control
// window, which only passes if the client gives credit back as it reads,
// then a burst.
func TestSmokeProtocols(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	t.Parallel() // a Caddy and ports of its own
	admin, port, tlsPort := caddyproc.Port(protoAdminBase), caddyproc.Port(protoHTTPBase), caddyproc.Port(protoHTTPSBase)
	site := `
	sse /events
	sse_publish /publish {
		max_size 10MiB
	}
	respond /nowhere 404`
	c := caddyproc.Start(t, fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	default_bind 127.0.0.1
	grace_period 1s
	local_certs
	skip_install_trust
}

http://localhost:%d {%s
}

https://localhost:%d {
	tls internal%s
}
`, admin, port, tlsPort, port, site, tlsPort, site), admin)
	ca := filepath.Join(c.Dir, "caddy", "pki", "authorities", "local", "root.crt")
	waitHandshake(t, ca, tlsPort)
	pid := strconv.Itoa(c.PID())
	secure := fmt.Sprintf("https://localhost:%d", tlsPort)
	subURL := "--sub-url=" + secure + "/events?topic={topic}"
	pubURL := fmt.Sprintf("--pub-url=http://localhost:%d/publish", port)

	for _, proto := range []string{protoH1TLS, protoH2, protoH3} {
		t.Run(proto, func(t *testing.T) {
			m := runTool(t, "idle", subURL, "--proto", proto, "--ca", ca, "-n", "20", "--duration", "1s", "--pid", pid)
			expectEqual(t, m, map[string]float64{"subscribers": 20, "connected": 20, "failed": 0, "dropped": 0})
			if m["proto"] != proto || m["reader"] != "goroutine" {
				t.Errorf("proto %v, reader %v", m["proto"], m["reader"])
			}
			num(t, m, "server.kib_per_sub")
			num(t, m, "tool.kib_per_conn")

			m = runTool(t, "fanout", subURL, pubURL, "--proto", proto, "--ca", ca, "-n", "20", "--topics", "3",
				"--rate", "50", "--duration", "1s", "--warmup", "100ms", "--pid", pid)
			checkClean(t, m)
			expectEqual(t, m, map[string]float64{"connected": 20, "published": 50, "expected": 7*17 + 7*17 + 6*16})
			if arrival, read := num(t, m, "latency_ms.mean"), num(t, m, "read_latency_ms.mean"); arrival != read {
				t.Errorf("without kernel timestamps the arrival is the read: %v ms and %v ms", arrival, read)
			}

			// 3 subscribers, 100 events of 64 KiB each: 6.4 MiB a stream
			m = runTool(t, "fanout", subURL, pubURL, "--proto", proto, "--ca", ca, "-n", "3", "--rate", "100",
				"--duration", "1s", "--warmup", "100ms", "--size", "65536", "--pub-type", "text/plain",
				"--pub-url", fmt.Sprintf("http://localhost:%d/publish?topic={topic}", port), "--pub-body", "{data}",
				"--grace", "10s")
			checkClean(t, m)
			expectEqual(t, m, map[string]float64{"expected": 300})

			// a burst of 500 events in arrays of 250 reaches every subscriber
			m = runTool(t, "burst", subURL, pubURL, "--proto", proto, "--ca", ca, "-n", "5", "--events", "500",
				"--batch", "250", "--warmup", "100ms")
			checkBurst(t, m, 5, 500)

			// refusals are counted by cause
			m = runTool(t, "idle", "--sub-url="+secure+"/nowhere", "--proto", proto, "--ca", ca, "-n", "3", "--duration", "100ms")
			expectEqual(t, m, map[string]float64{"connected": 0, "failed": 3, "failures.status 404": 3})
		})
	}

	t.Run("publishing over HTTPS", func(t *testing.T) {
		m := runTool(t, "fanout", subURL, "--pub-url="+secure+"/publish", "--pub-client", "http", "--proto", protoH2,
			"--ca", ca, "-n", "5", "--rate", "20", "--duration", "500ms", "--warmup", "100ms")
		checkClean(t, m)
		expectEqual(t, m, map[string]float64{"expected": 50})
	})

	t.Run("server profiles", func(t *testing.T) {
		prefix := filepath.Join(t.TempDir(), "run")
		prof := []string{"--pprof", c.AdminURL("/debug/pprof"), "--profile-out", prefix}
		runTool(t, append([]string{"fanout", subURL, pubURL, "--proto", protoH3, "--ca", ca, "-n", "5", "--rate", "20",
			"--duration", "1s", "--warmup", "100ms"}, prof...)...)
		runTool(t, append([]string{"idle", subURL, "--proto", protoH2, "--ca", ca, "-n", "5", "--duration", "200ms"}, prof...)...)
		for _, name := range []string{prefix + ".cpu.pb.gz", prefix + ".heap.pb.gz"} {
			b, err := os.ReadFile(name)
			if err != nil || len(b) < 100 || b[0] != 0x1f || b[1] != 0x8b {
				t.Errorf("%s: %d bytes, %v; want a gzipped profile", name, len(b), err)
			}
		}
	})

	t.Run("certificate", func(t *testing.T) {
		// without the CA the certificate is refused, unless told not to
		// check it
		m := runTool(t, "idle", subURL, "--proto", protoH2, "-n", "2", "--duration", "100ms")
		expectEqual(t, m, map[string]float64{"connected": 0, "failed": 2})
		m = runTool(t, "idle", subURL, "--proto", protoH3, "--insecure", "-n", "2", "--duration", "100ms")
		expectEqual(t, m, map[string]float64{"connected": 2})
	})
}

// waitHandshake waits until the HTTPS site on port completes a TLS
// handshake verified with the CA root in caFile.
func waitHandshake(t *testing.T, caFile string, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conf, err := tlsConfig(caFile, false)
		if err == nil {
			conf.ServerName = "localhost"
			var conn *tls.Conn
			conn, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port), conf)
			if err == nil {
				conn.Close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the HTTPS site did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
