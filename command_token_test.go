package caddysse

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
)

// tokenTestSecret is an HMAC secret of 40 bytes.
const tokenTestSecret = "0123456789abcdef0123456789abcdef-secret"

// writeTokenKey writes content to a file of a test's temporary directory
// and returns its path.
func writeTokenKey(t *testing.T, content []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pemKey encodes a DER key as a PEM block of type typ.
func pemKey(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// pkcs8 is key in PKCS #8 DER.
func pkcs8(t *testing.T, key crypto.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// parseMinted verifies a minted token as the hub would, with jwt/v5's
// parser, accepting only alg, and returns its claims.
func parseMinted(t *testing.T, raw, alg string, key any, opts ...jwt.ParserOption) jwt.MapClaims {
	t.Helper()
	opts = append(opts, jwt.WithValidMethods([]string{alg}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	claims := jwt.MapClaims{}
	tok, err := jwt.NewParser(opts...).ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return key, nil })
	if err != nil {
		t.Fatalf("verifying %s: %v", raw, err)
	}
	if tok.Header["alg"] != alg || tok.Header["typ"] != "JWT" {
		t.Fatalf("header %v, want alg %s", tok.Header, alg)
	}
	return claims
}

// TestMintTokenRoundTrip mints a token with each kind of key (an HMAC
// secret from a file or a variable, Ed25519 in PKCS #8, ECDSA in SEC 1,
// RSA in PKCS #1 and PKCS #8) and verifies it with the public key: the
// claims are the ones asked for.
func TestMintTokenRoundTrip(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSE_TEST_TOKEN_KEY", tokenTestSecret)

	cases := []struct {
		name    string
		alg     string
		keyFile []byte // else the variable SSE_TEST_TOKEN_KEY
		verify  any
	}{
		// the file's final CRLF is not part of the secret, as with {file.*}
		{"HS256 file", "HS256", []byte(tokenTestSecret + "\r\n"), []byte(tokenTestSecret)},
		{"HS256 variable", "HS256", nil, []byte(tokenTestSecret)},
		{"HS512 file", "HS512", []byte(tokenTestSecret + tokenTestSecret), []byte(tokenTestSecret + tokenTestSecret)},
		{"EdDSA PKCS #8", "EdDSA", pemKey("PRIVATE KEY", pkcs8(t, edKey)), edKey.Public()},
		{"ES256 SEC 1 after EC parameters", "ES256",
			append(pemKey("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}), pemKey("EC PRIVATE KEY", ecDER)...),
			ecKey.Public()},
		{"RS256 PKCS #1", "RS256", pemKey("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey.Public()},
		{"PS384 PKCS #8", "PS384", pemKey("PRIVATE KEY", pkcs8(t, rsaKey)), rsaKey.Public()},
	}
	now := time.Now()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := mintOptions{
				Alg:       c.alg,
				Subject:   "alice",
				Issuer:    "https://auth.example.com",
				Audience:  []string{"sse"},
				Subscribe: []string{"user/alice/**", "news"},
				Publish:   []string{"chat/*"},
				Claims:    []string{"tenant=acme", "note=a=b"},
				TTL:       10 * time.Minute,
				Now:       now,
			}
			if c.keyFile != nil {
				opts.KeyFile = writeTokenKey(t, c.keyFile)
			} else {
				opts.KeyEnv = "SSE_TEST_TOKEN_KEY"
			}
			raw, err := mintToken(opts)
			if err != nil {
				t.Fatal(err)
			}
			claims := parseMinted(t, raw, c.alg, c.verify,
				jwt.WithIssuer("https://auth.example.com"), jwt.WithAudience("sse"), jwt.WithSubject("alice"))
			want := map[string]any{
				"sub":    "alice",
				"iss":    "https://auth.example.com",
				"aud":    "sse",
				"iat":    float64(now.Unix()),
				"exp":    float64(now.Add(10 * time.Minute).Unix()),
				"sse":    map[string]any{"subscribe": []any{"user/alice/**", "news"}, "publish": []any{"chat/*"}},
				"tenant": "acme",
				"note":   "a=b",
			}
			if !reflect.DeepEqual(map[string]any(claims), want) {
				t.Fatalf("claims %v\nwant %v", claims, want)
			}
		})
	}
}

// TestMintTokenKeyFileAsCaddyReadsIt checks that the secret of
// --key-file is the value of the placeholder {file.<path>} that a route's
// key is given with, whatever the file's final line ending.
func TestMintTokenKeyFileAsCaddyReadsIt(t *testing.T) {
	for _, ending := range []string{"", "\n", "\r\n", "\n\n", " \n"} {
		path := writeTokenKey(t, []byte(tokenTestSecret+ending))
		raw, err := mintToken(mintOptions{KeyFile: path, Alg: "HS256", TTL: time.Minute, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		placeholder := caddy.NewReplacer().ReplaceAll("{file."+path+"}", "")
		parseMinted(t, raw, "HS256", []byte(placeholder))
	}
}

// TestMintTokenClaims checks the claims that depend on the flags: no sse
// claim without patterns, only the lists given, several audiences.
func TestMintTokenClaims(t *testing.T) {
	path := writeTokenKey(t, []byte(tokenTestSecret))
	now := time.Now()
	cases := []struct {
		name string
		opts mintOptions
		want map[string]any
	}{
		{"no patterns, no sse claim", mintOptions{}, map[string]any{}},
		{"publish only", mintOptions{Publish: []string{"a/b"}},
			map[string]any{"sse": map[string]any{"publish": []any{"a/b"}}}},
		{"subscribe only", mintOptions{Subscribe: []string{"**"}},
			map[string]any{"sse": map[string]any{"subscribe": []any{"**"}}}},
		{"two audiences", mintOptions{Audience: []string{"a", "b"}},
			map[string]any{"aud": []any{"a", "b"}}},
		{"an empty claim value", mintOptions{Claims: []string{"role="}},
			map[string]any{"role": ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.KeyFile, opts.Alg, opts.TTL, opts.Now = path, "HS256", 90*time.Second, now
			raw, err := mintToken(opts)
			if err != nil {
				t.Fatal(err)
			}
			claims := parseMinted(t, raw, "HS256", []byte(tokenTestSecret))
			c.want["iat"] = float64(now.Unix())
			c.want["exp"] = float64(now.Add(90 * time.Second).Unix())
			if !reflect.DeepEqual(map[string]any(claims), c.want) {
				t.Fatalf("claims %v\nwant %v", claims, c.want)
			}
		})
	}
}

// TestMintTokenRefusals checks every refusal of caddy sse-token: the
// key flags, the alg, the key, the ttl, patterns and claims.
func TestMintTokenRefusals(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(edKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	secret := writeTokenKey(t, []byte(tokenTestSecret))
	edPEM := writeTokenKey(t, pemKey("PRIVATE KEY", pkcs8(t, edKey)))
	t.Setenv("SSE_TEST_SHORT_KEY", "only 31 bytes of a secret .....")
	os.Unsetenv("SSE_TEST_NO_SUCH_KEY")

	cases := []struct {
		name string
		opts mintOptions
		msg  string
	}{
		{"both key flags", mintOptions{KeyFile: secret, KeyEnv: "SSE_TEST_SHORT_KEY"}, "either --key-file or --key-env, not both"},
		{"no key flag", mintOptions{}, "no key: give it with --key-file or --key-env"},
		{"missing key file", mintOptions{KeyFile: filepath.Join(t.TempDir(), "nope")}, "reading the key file"},
		{"missing variable", mintOptions{KeyEnv: "SSE_TEST_NO_SUCH_KEY"}, "the environment variable SSE_TEST_NO_SUCH_KEY is not set"},
		{"unknown alg", mintOptions{KeyFile: secret, Alg: "HS1024"},
			`--alg "HS1024": not a signing algorithm of tokens; use one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA`},
		{"alg none", mintOptions{KeyFile: secret, Alg: "none"}, `--alg "none": not a signing algorithm`},
		{"alg in lower case", mintOptions{KeyFile: secret, Alg: "hs256"}, `--alg "hs256": not a signing algorithm`},
		{"short secret", mintOptions{KeyEnv: "SSE_TEST_SHORT_KEY"},
			"the key in environment variable SSE_TEST_SHORT_KEY: a secret of 31 bytes is too short for HS256: it must be at least 32 bytes long"},
		{"secret shorter than HS512's hash", mintOptions{KeyFile: secret, Alg: "HS512"},
			"is too short for HS512: it must be at least 64 bytes long"},
		{"short secret once its line ending is gone", mintOptions{KeyFile: writeTokenKey(t, []byte(tokenTestSecret[:31]+"\r\n"))},
			"a secret of 31 bytes is too short"},
		{"Ed25519 key for ES256", mintOptions{KeyFile: edPEM, Alg: "ES256"},
			"--alg ES256 signs with an ECDSA P-256 private key, and this one is an Ed25519 key"},
		{"P-384 key for ES256", mintOptions{KeyFile: writeTokenKey(t, pemKey("PRIVATE KEY", pkcs8(t, p384))), Alg: "ES256"},
			"--alg ES256 signs with an ECDSA P-256 private key, and this one is an ECDSA P-384 key"},
		{"RSA key for EdDSA", mintOptions{KeyFile: writeTokenKey(t, pemKey("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))), Alg: "EdDSA"},
			"--alg EdDSA signs with an Ed25519 private key, and this one is an RSA key"},
		{"Ed25519 key for PS256", mintOptions{KeyFile: edPEM, Alg: "PS256"},
			"--alg PS256 signs with an RSA private key, and this one is an Ed25519 key"},
		{"a secret for RS256", mintOptions{KeyFile: secret, Alg: "RS256"}, "no PEM private key"},
		{"a public key", mintOptions{KeyFile: writeTokenKey(t, pemKey("PUBLIC KEY", pubDER)), Alg: "EdDSA"},
			`a PEM "PUBLIC KEY" block, not a private key`},
		{"a damaged PEM key", mintOptions{KeyFile: writeTokenKey(t, pemKey("EC PRIVATE KEY", []byte("not DER"))), Alg: "ES256"},
			`parsing the PEM "EC PRIVATE KEY" block`},
		{"an encrypted PEM key", mintOptions{KeyFile: writeTokenKey(t, pemKey("ENCRYPTED PRIVATE KEY", []byte("x"))), Alg: "ES256"},
			"the PEM private key is encrypted"},
		{"empty subscribe pattern", mintOptions{KeyFile: secret, Subscribe: []string{"a", ""}}, "--subscribe: an empty topic pattern"},
		{"empty publish pattern", mintOptions{KeyFile: secret, Publish: []string{""}}, "--publish: an empty topic pattern"},
		{"empty audience", mintOptions{KeyFile: secret, Audience: []string{""}}, "--audience: an empty audience"},
		{"claim without a value", mintOptions{KeyFile: secret, Claims: []string{"role"}}, `--claim "role": not of the form name=value`},
		{"claim without a name", mintOptions{KeyFile: secret, Claims: []string{"=x"}}, `--claim "=x": not of the form name=value`},
		{"reserved claim", mintOptions{KeyFile: secret, Claims: []string{"exp=never"}}, `the claim "exp" cannot be set with --claim`},
		{"sse claim", mintOptions{KeyFile: secret, Claims: []string{"sse=all"}}, `the claim "sse" cannot be set with --claim`},
		{"claim twice", mintOptions{KeyFile: secret, Claims: []string{"role=a", "role=b"}}, `the claim "role" is given twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			if opts.Alg == "" {
				opts.Alg = "HS256"
			}
			opts.TTL, opts.Now = time.Minute, time.Now()
			raw, err := mintToken(opts)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %q, %v; want an error with %q", raw, err, c.msg)
			}
		})
	}

	// tokens always expire, in whole seconds
	for _, ttl := range []time.Duration{0, -time.Hour, 500 * time.Millisecond} {
		raw, err := mintToken(mintOptions{KeyFile: secret, Alg: "HS256", TTL: ttl, Now: time.Now()})
		msg := "--ttl " + ttl.String() + ": a token must be valid for at least 1s"
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Fatalf("ttl %s: got %q, %v; want an error with %q", ttl, raw, err, msg)
		}
	}
}
