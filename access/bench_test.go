package access

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func BenchmarkMatch(b *testing.B) {
	for _, bc := range []struct{ name, pattern, topic string }{
		{"literal", "news/today/sports", "news/today/sports"},
		{"star", "users/*/inbox", "users/42/inbox"},
		{"globstar", "users/42/**", "users/42/inbox/a/b/c"},
		{"miss", "users/*/inbox", "users/42/outbox"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if Match(bc.pattern, bc.topic) == (bc.name == "miss") {
					b.Fatal("wrong match")
				}
			}
		})
	}
}

func BenchmarkCovers(b *testing.B) {
	patterns := []string{"news/*", "users/42/**", "chat/*/room/*"}
	b.ReportAllocs()
	for b.Loop() {
		if !Covers(patterns, "users/42/*/x/**") {
			b.Fatal("not covered")
		}
	}
}

// BenchmarkVerify verifies a token of common claims (sub, iss, aud, exp,
// iat, an sse claim of three patterns) with keys of each kind, and with a
// JWKS.
func BenchmarkVerify(b *testing.B) {
	c := claims(jwt.MapClaims{
		"iss": "https://issuer",
		"aud": "sse",
		"iat": now.Unix(),
		"sse": map[string]any{"subscribe": []string{"news/*", "users/alice/**"}, "publish": []string{"chat/*"}},
	})
	for _, bc := range []struct {
		alg    string
		signer any
		key    string
	}{
		{"HS256", []byte(hsSecret), hsSecret},
		{"EdDSA", key("ed"), pemOf(b, "ed")},
		{"ES256", key("p256"), pemOf(b, "p256")},
		{"RS256", key("rsa"), pemOf(b, "rsa")},
	} {
		b.Run(bc.alg, func(b *testing.B) {
			v := mustVerifier(b, Config{Keys: []string{bc.key}, Alg: bc.alg, Issuer: "https://issuer", Audience: "sse"})
			benchVerify(b, v, sign(b, bc.alg, bc.signer, c, nil))
		})
	}
	b.Run("JWKS-RS256", func(b *testing.B) {
		s := newJWKSServer(b, jwksOf(b, jwk{name: "rsa2", kid: "r2"}, jwk{name: "rsa", kid: "r1"}))
		v := mustVerifier(b, Config{JWKS: s.URL, Alg: "RS256", Issuer: "https://issuer", Audience: "sse"})
		benchVerify(b, v, sign(b, "RS256", key("rsa"), c, map[string]any{"kid": "r1"}))
	})
	b.Run("refused-HS256", func(b *testing.B) {
		v := mustVerifier(b, Config{Keys: []string{hsSecret}, Alg: "HS256"})
		raw := sign(b, "HS256", []byte("another secret of 32 bytes, or more"), c, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(raw, now); err == nil {
				b.Fatal("verified")
			}
		}
	})
}

// benchVerify verifies raw with v over and over.
func benchVerify(b *testing.B, v *Verifier, raw string) {
	b.ReportAllocs()
	at := now.Add(time.Minute)
	for b.Loop() {
		if _, err := v.Verify(raw, at); err != nil {
			b.Fatal(err)
		}
	}
}
