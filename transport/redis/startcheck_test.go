package redis

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// openErr opens a transport that must fail, and returns its error.
func openErr(t *testing.T, tr *Transport) error {
	t.Helper()
	tr.Timeout = 0
	err := tr.Open("h", defaultLimits, newSink())
	if err == nil {
		_ = tr.Close()
		t.Fatal("the transport opened")
	}
	t.Logf("open: %v", err)
	return err
}

// wantErr fails unless err says each of parts.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

// TestStartTLSAgainstPlaintext: tls against a Redis without TLS fails the
// load, naming TLS, instead of a hub unavailable forever.
func TestStartTLSAgainstPlaintext(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	err := openErr(t, &Transport{Addresses: []string{srv.Addr}, TLS: &TLSConfig{InsecureSkipVerify: true}})
	wantErr(t, err, "TLS", "answers without TLS", srv.Addr)
}

// TestStartTwoStandaloneAddresses: two addresses mean a Cluster; two
// standalone servers fail the load, saying so.
func TestStartTwoStandaloneAddresses(t *testing.T) {
	t.Parallel()
	a, b := startPrivateRedis(t), startPrivateRedis(t)
	err := openErr(t, &Transport{Addresses: []string{a.Addr, b.Addr}})
	wantErr(t, err, "not a Redis Cluster", "several addresses mean")
}

// TestStartReplica: an address naming a read-only replica fails the load.
func TestStartReplica(t *testing.T) {
	t.Parallel()
	primary := startPrivateRedis(t)
	replica := startPrivateRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	wantErr(t, openErr(t, &Transport{Addresses: []string{replica.Addr}}), "read-only replica", "name the primary")
}

// TestStartACL: a user Redis refuses the scripts, or the hub's channels,
// fails the load, naming what is missing.
func TestStartACL(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	c := srv.client()
	ctx := context.Background()
	for _, u := range [][]any{
		{"ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval"},
		{"ACL", "SETUSER", "nochannels", "on", ">pw", "~*", "resetchannels", "+@all"},
		{"ACL", "SETUSER", "nosubscribe", "on", ">pw", "~*", "&*", "+@all", "-ssubscribe", "-subscribe"},
		{"ACL", "SETUSER", "ok", "on", ">pw", "~{sse-acl:*", "&{sse-acl:*", "+@all", "-@dangerous", "+info"}, // as the README says
	} {
		if err := c.Do(ctx, u...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	user := func(name string) *Transport {
		return &Transport{Addresses: []string{srv.Addr}, Username: name, Password: "pw", Prefix: "sse-acl"}
	}
	wantErr(t, openErr(t, user("noscripts")), `user "noscripts"`, "may not run the hub's Lua scripts", "NOPERM", "+evalsha")
	wantErr(t, openErr(t, user("nochannels")), `user "nochannels"`, "may not publish on the hub's channels", "NOPERM", "&{sse-acl:*)")
	wantErr(t, openErr(t, user("nosubscribe")), `user "nosubscribe"`, "may not subscribe", "NOPERM", "+ssubscribe")
	// rights to the hub's keys and channels are enough
	n := openNode(t, srv.Addr, "sse-acl", "h", defaultLimits, func(tr *Transport) { tr.Username, tr.Password = "ok", "pw" })
	n.watch(t, "x")
	n.sink.awaitSeq(t, seqOf(t, n.publish(t, "a", "x").ID))
}

// TestStartPlaintextAgainstTLS: no tls against a Redis that expects it
// fails the load, naming TLS.
func TestStartPlaintextAgainstTLS(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SSE_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server is not installed")
		}
		t.Skip("redis-server is not installed")
	}
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command("redis-server", "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for !answersTLS(context.Background(), addr) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			if strings.Contains(string(log), "tls") || cmd.ProcessState != nil {
				t.Skipf("redis-server without TLS support?\n%s", log)
			}
			t.Fatalf("redis-server with TLS did not answer\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantErr(t, openErr(t, &Transport{Addresses: []string{addr}}), "expects TLS", "add tls")
	// and with tls it works
	n := openNode(t, addr, "p", "h", defaultLimits, func(tr *Transport) { tr.TLS = &TLSConfig{InsecureSkipVerify: true} })
	n.watch(t, "x")
	n.sink.awaitSeq(t, seqOf(t, n.publish(t, "a", "x").ID))
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
