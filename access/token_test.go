package access

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestNewVerifierRefuses(t *testing.T) {
	rsaPEM, p256PEM, p384PEM, edPEM := pemOf(t, "rsa"), pemOf(t, "p256"), pemOf(t, "p384"), pemOf(t, "ed")
	der, err := x509.MarshalPKCS8PrivateKey(key("p256"))
	if err != nil {
		t.Fatal(err)
	}
	privatePEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // in the error message
	}{
		{"no alg", Config{Keys: []string{hsSecret}}, []string{"no alg", "HS256, HS384, HS512, RS256"}},
		{"alg none", Config{Keys: []string{hsSecret}, Alg: "none"}, []string{`alg "none" is not accepted`, "EdDSA"}},
		{"alg in lower case", Config{Keys: []string{hsSecret}, Alg: "hs256"}, []string{`alg "hs256" is not accepted`}},
		{"alg unknown", Config{Keys: []string{hsSecret}, Alg: "ES256K"}, []string{`alg "ES256K"`}},
		{"keys and jwks", Config{Keys: []string{hsSecret}, JWKS: "https://idp/jwks", Alg: "RS256"}, []string{"both keys and a jwks"}},
		{"no key", Config{Alg: "RS256"}, []string{"no key"}},
		{"empty secret", Config{Keys: []string{""}, Alg: "HS256"}, []string{"key 1: the secret is empty"}},
		{"PEM key as HMAC secret", Config{Keys: []string{rsaPEM}, Alg: "HS256"}, []string{"key 1: a PEM key cannot be the secret of HS256"}},
		{"short HS256 secret", Config{Keys: []string{hsSecret[:31]}, Alg: "HS256"}, []string{"key 1: the secret is 31 bytes long, and HS256 needs 32 bytes", "RFC 7518"}},
		{"short HS384 secret", Config{Keys: []string{strings.Repeat("s", 47)}, Alg: "HS384"}, []string{"HS384 needs 48 bytes"}},
		{"short HS512 secret", Config{Keys: []string{strings.Repeat("s", 64), strings.Repeat("s", 63)}, Alg: "HS512"}, []string{"key 2: the secret is 63 bytes long, and HS512 needs 64 bytes"}},
		{"ECDSA key for RS256", Config{Keys: []string{rsaPEM, p256PEM}, Alg: "RS256"}, []string{"key 2: an ECDSA P-256 key cannot verify RS256"}},
		{"P-384 key for ES256", Config{Keys: []string{p384PEM}, Alg: "ES256"}, []string{"key 1: an ECDSA P-384 key cannot verify ES256"}},
		{"P-256 key for ES384", Config{Keys: []string{p256PEM}, Alg: "ES384"}, []string{"an ECDSA P-256 key cannot verify ES384"}},
		{"RSA key for EdDSA", Config{Keys: []string{rsaPEM}, Alg: "EdDSA"}, []string{"key 1: an RSA key cannot verify EdDSA"}},
		{"Ed25519 key for PS256", Config{Keys: []string{edPEM}, Alg: "PS256"}, []string{"an Ed25519 key cannot verify PS256"}},
		{"RSA key of 1024 bits", Config{Keys: []string{pemOf(t, "rsa1024")}, Alg: "RS256"}, []string{"an RSA key of 1024 bits is too short for RS256"}},
		{"not PEM", Config{Keys: []string{"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"}, Alg: "RS256"}, []string{"key 1: not a PEM public key"}},
		{"broken PEM body", Config{Keys: []string{"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}, Alg: "RS256"}, []string{"key 1: parsing the public key"}},
		{"private key", Config{Keys: []string{privatePEM}, Alg: "ES256"}, []string{"key 1: a private key", "give its public key"}},
		{"two PEM blocks in a key", Config{Keys: []string{rsaPEM + rsaPEM}, Alg: "RS256"}, []string{"more than one PEM block"}},
		{"not a key block", Config{Keys: []string{"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"}, Alg: "ES256"}, []string{`a PEM "EC PARAMETERS" block is not a public key`}},
		{"jwks not http", Config{JWKS: "ftp://idp/jwks", Alg: "RS256"}, []string{`jwks "ftp://idp/jwks" is not an http or https URL`}},
		{"jwks relative", Config{JWKS: "/jwks", Alg: "RS256"}, []string{"not an http or https URL"}},
		{"jwks for HS256", Config{JWKS: "https://idp/jwks", Alg: "HS256"}, []string{"a jwks cannot serve HS256"}},
		{"negative refresh", Config{JWKS: "https://idp/jwks", Alg: "RS256", Refresh: -time.Second}, []string{"refresh -1s is negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			t.Log(err)
			if err == nil {
				v.Close()
				t.Fatal("no error")
			}
			if !hasText(err, tc.want...) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestEveryAlg verifies a token of every alg, with every form of key.
func TestEveryAlg(t *testing.T) {
	rsaPKCS1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY",
		Bytes: x509.MarshalPKCS1PublicKey(key("rsa").Public().(*rsa.PublicKey))}))
	for _, tc := range []struct {
		alg, key string // key: a secret, or the name of a test key
		verify   string // the key given to the verifier
	}{
		{"HS256", hsSecret, hsSecret},
		{"HS384", strings.Repeat("x", 48), strings.Repeat("x", 48)},
		{"HS512", strings.Repeat("y", 64), strings.Repeat("y", 64)},
		{"RS256", "rsa", pemOf(t, "rsa")},
		{"RS256", "rsa", rsaPKCS1},
		{"RS256", "rsa", certOf(t, "rsa")},
		{"RS384", "rsa", pemOf(t, "rsa")},
		{"RS512", "rsa", pemOf(t, "rsa")},
		{"PS256", "rsa", pemOf(t, "rsa")},
		{"PS384", "rsa", pemOf(t, "rsa")},
		{"PS512", "rsa", certOf(t, "rsa")},
		{"ES256", "p256", pemOf(t, "p256")},
		{"ES256", "p256", certOf(t, "p256")},
		{"ES384", "p384", pemOf(t, "p384")},
		{"ES512", "p521", pemOf(t, "p521")},
		{"EdDSA", "ed", pemOf(t, "ed")},
		{"EdDSA", "ed", certOf(t, "ed")},
		{"EdDSA", "ed", "\n  " + pemOf(t, "ed") + "\n\n"},
	} {
		var signer any = []byte(tc.key)
		if !strings.HasPrefix(tc.alg, "HS") {
			signer = key(tc.key)
		}
		raw := sign(t, tc.alg, signer, claims(nil), nil)
		v := mustVerifier(t, Config{Keys: []string{tc.verify}, Alg: tc.alg})
		tok, err := v.Verify(raw, now)
		if err != nil || tok.Subject != "alice" {
			t.Errorf("%s with %.30q: %v, %+v", tc.alg, tc.verify, err, tok)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	rsaPEM := pemOf(t, "rsa")
	hs := mustVerifier(t, Config{Keys: []string{hsSecret}, Alg: "HS256"})
	rs := mustVerifier(t, Config{Keys: []string{rsaPEM}, Alg: "RS256"})
	strict := mustVerifier(t, Config{Keys: []string{hsSecret}, Alg: "HS256", Issuer: "https://issuer", Audience: "sse"})
	good := sign(t, "HS256", []byte(hsSecret), claims(nil), nil)
	parts := strings.Split(good, ".")
	hsClaims := func(more jwt.MapClaims) string {
		return sign(t, "HS256", []byte(hsSecret), claims(more), nil)
	}
	const header = `{"alg":"HS256","typ":"JWT"}`
	big := rawToken(header, `{"sub":"`+strings.Repeat("a", 100<<10)+`"}`, "c2ln")
	for _, tc := range []struct {
		name string
		v    *Verifier
		raw  string
		want []string // in the error message
	}{
		{"no token", hs, "", []string{"invalid token: no token"}},
		{"garbage", hs, "garbage-garbage-garbage", []string{"malformed"}},
		{"two parts", hs, parts[0] + "." + parts[1], []string{"malformed"}},
		{"four parts", hs, good + ".x", []string{"malformed"}},
		{"header not base64", hs, "!!!." + parts[1] + "." + parts[2], []string{"malformed", "base64"}},
		{"header not JSON", hs, rawToken("{", `{"sub":"x"}`, parts[2]), []string{"malformed"}},
		{"claims not JSON", hs, signRaw(header, "not json at all", hsSecret), []string{"malformed"}},
		{"claims not JSON, badly signed", hs, rawToken(header, "not json at all", parts[2]), []string{"the signature does not verify"}},
		{"claims an array", hs, signRaw(header, `["sub"]`, hsSecret), []string{"malformed: the claims are not a JSON object"}},
		{"claims null", hs, signRaw(header, `null`, hsSecret), []string{"malformed: the claims are not a JSON object"}},
		{"claims a string", hs, signRaw(header, `"sub"`, hsSecret), []string{"malformed"}},
		{"claims empty", hs, signRaw(header, ``, hsSecret), []string{"malformed"}},
		{"signature not base64", hs, parts[0] + "." + parts[1] + ".***", []string{"malformed"}},
		{"bad signature", hs, sign(t, "HS256", []byte(strings.Repeat("k", 32)), claims(nil), nil), []string{"the signature does not verify"}},
		{"no signature", hs, parts[0] + "." + parts[1] + ".", []string{"the signature does not verify"}},
		{"claims changed", hs, parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root"}`)) + "." + parts[2], []string{"the signature does not verify"}},
		{"alg none", hs, unsigned(t, claims(nil)), []string{`signed with alg "none", want HS256`}},
		{"alg none crafted", hs, rawToken(`{"alg":"none"}`, `{"sub":"root"}`, ""), []string{`signed with alg "none", want HS256`}},
		{"alg None", hs, rawToken(`{"alg":"None"}`, `{"sub":"root"}`, ""), []string{`signed with alg "None", want HS256`}},
		{"no alg", hs, rawToken(`{"typ":"JWT"}`, `{"sub":"root"}`, parts[2]), []string{"malformed: the header has no alg"}},
		{"alg not a string", hs, rawToken(`{"alg":256}`, `{"sub":"root"}`, parts[2]), []string{"malformed: the header has no alg"}},
		{"alg unknown", hs, rawToken(`{"alg":"XX999"}`, `{"sub":"root"}`, parts[2]), []string{`signed with alg "XX999", want HS256`}},
		{"HS256 token to RS256", rs, good, []string{`signed with alg "HS256", want RS256`}},
		{"RS256 token to HS256", hs, sign(t, "RS256", key("rsa"), claims(nil), nil), []string{`signed with alg "RS256", want HS256`}},
		{"RS384 token to RS256", rs, sign(t, "RS384", key("rsa"), claims(nil), nil), []string{`signed with alg "RS384", want RS256`}},
		// The key confusion: HMAC with the public key, which anyone has,
		// as the secret.
		{"HS256 token of the public key to RS256", rs, sign(t, "HS256", []byte(rsaPEM), claims(nil), nil), []string{`signed with alg "HS256", want RS256`}},
		{"RS256 token of another key", rs, sign(t, "RS256", key("rsa2"), claims(nil), nil), []string{"the signature does not verify"}},
		{"wrong issuer", strict, hsClaims(jwt.MapClaims{"iss": "https://evil", "aud": "sse"}), []string{`issuer "https://evil", want "https://issuer"`}},
		{"no issuer", strict, hsClaims(jwt.MapClaims{"aud": "sse"}), []string{`no issuer, want "https://issuer"`}},
		{"issuer not a string", strict, hsClaims(jwt.MapClaims{"iss": 5, "aud": "sse"}), []string{"malformed: the iss claim is not a string"}},
		{"wrong audience", strict, hsClaims(jwt.MapClaims{"iss": "https://issuer", "aud": "other"}), []string{`audience "other", want "sse"`}},
		{"audiences without it", strict, hsClaims(jwt.MapClaims{"iss": "https://issuer", "aud": []string{"a", "b"}}), []string{`none of the 2 audiences is "sse"`}},
		{"no audience", strict, hsClaims(jwt.MapClaims{"iss": "https://issuer"}), []string{`no audience, want "sse"`}},
		{"audience not a string", strict, hsClaims(jwt.MapClaims{"iss": "https://issuer", "aud": 5}), []string{"malformed: the aud claim"}},
		{"audiences not strings", strict, hsClaims(jwt.MapClaims{"iss": "https://issuer", "aud": []any{1, "sse"}}), []string{"malformed: the aud claim"}},
		{"sub not a string", hs, hsClaims(jwt.MapClaims{"sub": 42}), []string{"malformed: the sub claim is not a string"}},
		{"exp not a number", hs, hsClaims(jwt.MapClaims{"exp": "tomorrow"}), []string{"malformed: the exp claim is not a number"}},
		{"exp out of range", hs, signRaw(header, `{"exp":1e300}`, hsSecret), []string{"malformed: the exp claim is out of range"}},
		{"nbf not a number", hs, hsClaims(jwt.MapClaims{"nbf": true}), []string{"malformed: the nbf claim is not a number"}},
		{"nbf 31 s ahead", hs, hsClaims(jwt.MapClaims{"nbf": now.Add(31 * time.Second).Unix()}), []string{"not valid before 2023-11-14T22:13:51Z"}},
		{"nbf ahead and exp passed", hs, hsClaims(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix(), "exp": now.Unix()}), []string{"not valid before"}},
		{"sse not an object", hs, hsClaims(jwt.MapClaims{"sse": "everything"}), []string{"the sse claim is not an object"}},
		{"sse a list", hs, hsClaims(jwt.MapClaims{"sse": []string{"news/*"}}), []string{"the sse claim is not an object"}},
		{"sse null", hs, hsClaims(jwt.MapClaims{"sse": nil}), []string{"the sse claim is not an object"}},
		{"sse subscribe a string", hs, hsClaims(jwt.MapClaims{"sse": map[string]any{"subscribe": "news/*"}}), []string{"the sse claim's subscribe is not a list of strings"}},
		{"sse publish with a number", hs, hsClaims(jwt.MapClaims{"sse": map[string]any{"publish": []any{"a", 1}}}), []string{"the sse claim's publish is not a list of strings"}},
		{"sse bad and expired", hs, hsClaims(jwt.MapClaims{"sse": 1, "exp": now.Add(-time.Hour).Unix()}), []string{"the sse claim is not an object"}},
		{"100 KB", hs, big, []string{"the token is larger than 8192 bytes"}},
		{"8193 bytes", hs, good + strings.Repeat("A", MaxTokenSize+1-len(good)), []string{"the token is larger than 8192 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.v.Verify(tc.raw, now)
			t.Log(err)
			if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrExpired) || errors.Is(err, ErrNoKey) {
				t.Fatalf("error %v, want one wrapping ErrInvalid only", err)
			}
			if tok != nil {
				t.Errorf("token %+v returned with the error", tok)
			}
			if !hasText(err, tc.want...) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			for _, part := range strings.Split(tc.raw, ".") {
				if len(part) >= 8 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q has the token's text", err)
				}
			}
		})
	}
}

func TestVerifyTimes(t *testing.T) {
	v := mustVerifier(t, Config{Keys: []string{hsSecret}, Alg: "HS256"})
	const header = `{"alg":"HS256","typ":"JWT"}`
	for _, tc := range []struct {
		name    string
		raw     string
		at      time.Time
		expired bool
		invalid bool
	}{
		{"exp 1 s later", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": now.Unix() + 1}), nil), now, false, false},
		{"exp now", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": now.Unix()}), nil), now, true, false},
		{"exp 1 ns ago", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": now.Unix()}), nil), now.Add(time.Nanosecond), true, false},
		{"exp 1 h ago", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": now.Unix() - 3600}), nil), now, true, false},
		{"exp 0", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": 0}), nil), now, true, false},
		{"exp with a fraction ahead", signRaw(header, `{"exp":1700000000.5}`, hsSecret), now.Add(499 * time.Millisecond), false, false},
		{"exp with a fraction passed", signRaw(header, `{"exp":1700000000.5}`, hsSecret), now.Add(500 * time.Millisecond), true, false},
		{"exp with an exponent", signRaw(header, `{"exp":1.7000001e9}`, hsSecret), now.Add(99 * time.Second), false, false},
		{"no exp", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": absent{}}), nil), now.Add(100 * 365 * 24 * time.Hour), false, false},
		{"nbf 29 s ahead", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"nbf": now.Unix() + 29}), nil), now, false, false},
		{"nbf 30 s ahead", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"nbf": now.Unix() + 30}), nil), now, false, false},
		{"nbf 31 s ahead", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"nbf": now.Unix() + 31}), nil), now, false, true},
		{"nbf passed", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"nbf": now.Unix() - 60}), nil), now, false, false},
		{"iat ahead", sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"iat": now.Unix() + 3600}), nil), now, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := v.Verify(tc.raw, tc.at)
			switch {
			case tc.invalid:
				if !errors.Is(err, ErrInvalid) || tok != nil {
					t.Errorf("%+v, %v, want ErrInvalid", tok, err)
				}
			case tc.expired:
				if !errors.Is(err, ErrExpired) || errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v, want ErrExpired", err)
				}
				if tok == nil || tok.Expires.IsZero() || !hasText(err, "the token has expired at ") {
					t.Errorf("%+v, %v, want the token with ErrExpired", tok, err)
				}
			case err != nil:
				t.Errorf("error %v", err)
			}
		})
	}
	// The subject of an expired token is there for the logs.
	raw := sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"sub": "bob", "exp": now.Unix()}), nil)
	tok, err := v.Verify(raw, now)
	if !errors.Is(err, ErrExpired) || tok.Subject != "bob" || !tok.Expires.Equal(now) {
		t.Errorf("expired: %+v, %v", tok, err)
	}
	raw = sign(t, "HS256", []byte(hsSecret), claims(jwt.MapClaims{"exp": absent{}}), nil)
	if tok, err := v.Verify(raw, now); err != nil || !tok.Expires.IsZero() {
		t.Errorf("without exp: %+v, %v", tok, err)
	}
}

func TestVerifyClaims(t *testing.T) {
	v := mustVerifier(t, Config{Keys: []string{hsSecret}, Alg: "HS256", Issuer: "https://issuer", Audience: "sse"})
	raw := signRaw(`{"alg":"HS256","typ":"JWT","kid":"k1"}`, `{
		"sub": "alice", "iss": "https://issuer", "aud": ["web", "sse"],
		"exp": 1700003600, "iat": 1700000000, "e": 1.7e9, "f": 1.5, "neg": -3,
		"big": 12345678901234567890, "admin": true, "off": false, "name": "Al",
		"empty": "", "nested": {"a": 1}, "list": [1, 2], "none": null,
		"sse": {"subscribe": ["news/*", "users/alice/**"], "publish": ["chat/*"], "future": 1}
	}`, hsSecret)
	tok, err := v.Verify(raw, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &Token{
		Subject:   "alice",
		Expires:   time.Unix(1700003600, 0),
		Grants:    true,
		Subscribe: []string{"news/*", "users/alice/**"},
		Publish:   []string{"chat/*"},
	}
	got := *tok
	got.claims = nil
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("token\n%+v\nwant\n%+v", &got, want)
	}
	for name, value := range map[string]string{
		"sub": "alice", "iss": "https://issuer", "exp": "1700003600", "iat": "1700000000",
		"e": "1700000000", "f": "1.5", "neg": "-3", "big": "12345678901234567890",
		"admin": "true", "off": "false", "name": "Al", "empty": "",
	} {
		if v, ok := tok.Claim(name); !ok || v != value {
			t.Errorf("claim %s: %q %v, want %q", name, v, ok, value)
		}
	}
	for _, name := range []string{"nested", "list", "none", "sse", "missing"} {
		if v, ok := tok.Claim(name); ok {
			t.Errorf("claim %s: %q, want none", name, v)
		}
	}

	// Escapes, white space, a repeated claim (the last one counts, as
	// with encoding/json).
	raw = signRaw(`{"alg":"HS256"}`, `{ "s\u0075b" : "\u00e9\"\/" ,
		"n":1, "n":{}, "iss":"https://issuer", "aud":"sse", "sse":{"subscribe":["a\/*"]}}`, hsSecret)
	tok, err = v.Verify(raw, now)
	if err != nil {
		t.Fatal(err)
	}
	if sub, _ := tok.Claim("sub"); tok.Subject != `é"/` || sub != `é"/` || tok.Subscribe[0] != "a/*" {
		t.Errorf("escapes: %+v", tok)
	}
	if v, ok := tok.Claim("n"); ok {
		t.Errorf("repeated claim: %q", v)
	}

	for _, tc := range []struct {
		sse                string
		grants             bool
		subscribe, publish []string
	}{
		{``, false, nil, nil},
		{`,"sse":{}`, true, nil, nil},
		{`,"sse":{"subscribe":[]}`, true, []string{}, nil},
		{`,"sse":{"publish":["a/**"]}`, true, nil, []string{"a/**"}},
		{`,"sse":{"subscribe":["a/*"],"publish":null}`, true, []string{"a/*"}, nil},
	} {
		raw := signRaw(`{"alg":"HS256"}`, `{"iss":"https://issuer","aud":"sse"`+tc.sse+`}`, hsSecret)
		tok, err := v.Verify(raw, now)
		if err != nil {
			t.Fatalf("%s: %v", tc.sse, err)
		}
		if tok.Grants != tc.grants || !reflect.DeepEqual(tok.Subscribe, tc.subscribe) || !reflect.DeepEqual(tok.Publish, tc.publish) {
			t.Errorf("%s: %+v", tc.sse, tok)
		}
		if tok.Subject != "" || !tok.Expires.IsZero() {
			t.Errorf("%s: subject %q, expires %v", tc.sse, tok.Subject, tok.Expires)
		}
	}
}

func TestRotation(t *testing.T) {
	other := strings.Repeat("z", 32)
	for _, tc := range []struct {
		alg              string
		keys             []string
		signers          []any // each accepted
		stranger         any   // refused
		strangerRejected string
	}{
		{"HS256", []string{hsSecret, other}, []any{[]byte(hsSecret), []byte(other)}, []byte(strings.Repeat("q", 32)), "the signature does not verify"},
		{"RS256", []string{pemOf(t, "rsa"), pemOf(t, "rsa2")}, []any{key("rsa"), key("rsa2")}, nil, ""},
		{"ES256", []string{pemOf(t, "p256"), certOf(t, "p256b")}, []any{key("p256"), key("p256b")}, nil, ""},
		{"EdDSA", []string{pemOf(t, "ed"), pemOf(t, "ed2")}, []any{key("ed"), key("ed2")}, nil, ""},
	} {
		v := mustVerifier(t, Config{Keys: tc.keys, Alg: tc.alg})
		for i, s := range tc.signers {
			if _, err := v.Verify(sign(t, tc.alg, s, claims(nil), map[string]any{"kid": "whatever"}), now); err != nil {
				t.Errorf("%s key %d: %v", tc.alg, i+1, err)
			}
		}
		if tc.stranger != nil {
			_, err := v.Verify(sign(t, tc.alg, tc.stranger, claims(nil), nil), now)
			if !errors.Is(err, ErrInvalid) || !hasText(err, tc.strangerRejected) {
				t.Errorf("%s stranger: %v", tc.alg, err)
			}
		}
	}
	// One key of the two verifies.
	v := mustVerifier(t, Config{Keys: []string{pemOf(t, "p256")}, Alg: "ES256"})
	if _, err := v.Verify(sign(t, "ES256", key("p256b"), claims(nil), nil), now); !hasText(err, "the signature does not verify") {
		t.Errorf("ES256 other key: %v", err)
	}
}

func TestVerifyConcurrently(t *testing.T) {
	v := mustVerifier(t, Config{Keys: []string{pemOf(t, "ed")}, Alg: "EdDSA"})
	raw := sign(t, "EdDSA", key("ed"), claims(jwt.MapClaims{"sse": map[string]any{"subscribe": []string{"a/*"}}}), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if tok, err := v.Verify(raw, now); err != nil || tok.Subscribe[0] != "a/*" {
					t.Errorf("%+v, %v", tok, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
