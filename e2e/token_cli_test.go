package e2e

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestTokenCLI runs `caddy sse-token`: the token it prints verifies with
// the key file's secret (without the file's final line ending) and has
// the claims asked for; a key or an alg it refuses ends the command with
// status 1, nothing on standard output and a message saying why.
func TestTokenCLI(t *testing.T) {
	t.Parallel()
	const secret = "an e2e secret of more than 32 bytes"
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "sse.key")
	if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shortKey := filepath.Join(dir, "short.key")
	if err := os.WriteFile(shortKey, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	before := time.Now().Truncate(time.Second)
	res := runCaddyCommand(t, "", "sse-token", "--key-file", keyFile, "--sub", "alice", "--subscribe", "user/alice/**", "--ttl", "1m")
	after := time.Now()
	if res.code != 0 {
		t.Fatalf("exit status %d: %s", res.code, res.stderr)
	}
	raw, ok := strings.CutSuffix(res.stdout, "\n")
	if !ok || strings.ContainsAny(raw, " \n") {
		t.Fatalf("stdout %q, want a token and a line ending", res.stdout)
	}
	claims := jwt.MapClaims{}
	p := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithSubject("alice"))
	if _, err := p.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return []byte(secret), nil }); err != nil {
		t.Fatalf("verifying %s: %v", raw, err)
	}
	iat, err := claims.GetIssuedAt()
	if err != nil || iat == nil || iat.Before(before) || iat.After(after) {
		t.Fatalf("iat %v (%v), want between %v and %v", iat, err, before, after)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil || exp.Sub(iat.Time) != time.Minute {
		t.Fatalf("exp %v (%v), want iat + 1m (%v)", exp, err, iat)
	}
	want := map[string]any{"subscribe": []any{"user/alice/**"}}
	if !reflect.DeepEqual(claims["sse"], want) || len(claims) != 4 {
		t.Fatalf("claims %v, want sub, iat, exp and sse %v", claims, want)
	}

	refusals := []struct {
		name string
		args []string
		msg  string
	}{
		{"short secret", []string{"--key-file", shortKey}, "a secret of 9 bytes is too short for HS256: it must be at least 32 bytes long"},
		{"alg none", []string{"--key-file", keyFile, "--alg", "none"}, "not a signing algorithm of tokens; use one of HS256 HS384 HS512"},
		{"no key", []string{"--sub", "alice"}, "no key: give it with --key-file or --key-env"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			res := runCaddyCommand(t, "", append([]string{"sse-token"}, c.args...)...)
			if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, c.msg) || strings.HasPrefix(res.stderr, "{") {
				t.Fatalf("exit status %d, stdout %q, stderr %q; want 1, nothing, and a message with %q", res.code, res.stdout, res.stderr, c.msg)
			}
		})
	}
}
