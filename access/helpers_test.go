package access

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// now is the time tokens are verified at in tests.
var now = time.Unix(1_700_000_000, 0)

// hsSecret is an HS256 secret of the least length.
const hsSecret = "0123456789abcdef0123456789abcdef"

// testKeys are generated once: RSA keys are slow to make.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	keys := map[string]crypto.Signer{}
	for _, name := range []string{"rsa", "rsa2"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[name] = k
	}
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		panic(err)
	}
	keys["rsa1024"] = k
	for name, curve := range map[string]elliptic.Curve{"p256": elliptic.P256(), "p256b": elliptic.P256(), "p384": elliptic.P384(), "p521": elliptic.P521()} {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			panic(err)
		}
		keys[name] = k
	}
	for _, name := range []string{"ed", "ed2"} {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		keys[name] = k
	}
	return keys
})

// key returns the private key of that name.
func key(name string) crypto.Signer {
	return testKeys()[name]
}

// pemOf returns the PKIX PEM of name's public key.
func pemOf(t testing.TB, name string) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key(name).Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// certOf returns a self-signed certificate of name's key, as PEM.
func certOf(t testing.TB, name string) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key(name).Public(), key(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// sign returns a token of claims signed with alg and key (a private key,
// or an HMAC secret as []byte), its header with the extra fields of
// header.
func sign(t testing.TB, alg string, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg), claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	raw, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// unsigned returns a token of claims with the alg "none" and no
// signature.
func unsigned(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	raw, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// rawToken returns a token of the header and claims JSON texts as they
// are, with the signature given.
func rawToken(header, claims, signature string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims)) + "." + signature
}

// signRaw returns a token of the header and claims JSON texts as they
// are, signed with HS256 and secret.
func signRaw(header, claims, secret string) string {
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

// mustVerifier returns a verifier for cfg, failing the test on an error;
// it is closed with the test.
func mustVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// absent, in the claims given to claims, removes the claim.
type absent struct{}

// claims returns claims valid at now, with more.
func claims(more jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}
	for k, v := range more {
		if _, ok := v.(absent); ok {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// hasText reports whether err's message has every one of texts.
func hasText(err error, texts ...string) bool {
	if err == nil {
		return false
	}
	for _, s := range texts {
		if !strings.Contains(err.Error(), s) {
			return false
		}
	}
	return true
}
