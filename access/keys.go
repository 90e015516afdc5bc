package access

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// allowedAlgs lists the algs a Verifier accepts, for error messages.
const allowedAlgs = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"

// minRSABits is the smallest RSA key accepted (RFC 7518 sections 3.3 and
// 3.5: "a key of size 2048 bits or larger MUST be used").
const minRSABits = 2048

// keyKind is the kind of key an alg is verified with.
type keyKind int

const (
	hmacKey keyKind = iota
	rsaKey
	ecdsaKey
	ed25519Key
)

// rule is what an alg asks of its keys.
type rule struct {
	alg  string
	kind keyKind
	// size is the least length in bytes of an HMAC secret: the size of
	// the hash, as RFC 7518 section 3.2 requires.
	size int
	// curve is the ECDSA curve's name.
	curve string
}

// ruleFor returns the rule of alg, or an error naming the algs accepted.
func ruleFor(alg string) (rule, error) {
	r := rule{alg: alg}
	switch alg {
	case "HS256", "HS384", "HS512":
		r.kind, r.size = hmacKey, hashBytes(alg)
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		r.kind = rsaKey
	case "ES256":
		r.kind, r.curve = ecdsaKey, "P-256"
	case "ES384":
		r.kind, r.curve = ecdsaKey, "P-384"
	case "ES512":
		r.kind, r.curve = ecdsaKey, "P-521"
	case "EdDSA":
		r.kind = ed25519Key
	case "":
		return rule{}, fmt.Errorf("no alg: give one of %s", allowedAlgs)
	default:
		return rule{}, fmt.Errorf("alg %q is not accepted: give one of %s", alg, allowedAlgs)
	}
	return r, nil
}

// hashBytes returns the size in bytes of the hash of an alg ending in
// 256, 384 or 512.
func hashBytes(alg string) int {
	switch {
	case strings.HasSuffix(alg, "384"):
		return 48
	case strings.HasSuffix(alg, "512"):
		return 64
	default:
		return 32
	}
}

// parseKey returns the key that raw (the n-th key of the config, from 1)
// gives for r: the bytes of an HMAC secret, or a PEM public key of the
// kind r asks for.
func parseKey(n int, raw string, r rule) (any, error) {
	var key any
	var err error
	if r.kind == hmacKey {
		key, err = parseSecret(raw, r)
	} else {
		key, err = parsePublicKey(raw)
		if err == nil {
			err = r.suits(key)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key %d: %w", n, err)
	}
	return key, nil
}

// parseSecret returns the bytes of an HMAC secret. It refuses a PEM key:
// verifying HMAC with a public key as the secret is how tokens are forged
// with the key anyone may read.
func parseSecret(raw string, r rule) ([]byte, error) {
	switch {
	case raw == "":
		return nil, fmt.Errorf("the secret is empty")
	case strings.Contains(raw, "-----BEGIN"):
		return nil, fmt.Errorf("a PEM key cannot be the secret of %s, which is a shared secret: for a public key, use an RS, PS, ES or EdDSA alg", r.alg)
	case len(raw) < r.size:
		return nil, fmt.Errorf("the secret is %d bytes long, and %s needs %d bytes at least (RFC 7518 section 3.2: a key as long as the hash)", len(raw), r.alg, r.size)
	}
	return []byte(raw), nil
}

// parsePublicKey returns the public key of a PEM block (spaces around
// it aside): a PKIX "PUBLIC KEY", a PKCS #1 "RSA PUBLIC KEY", or a
// "CERTIFICATE"'s.
func parsePublicKey(raw string) (any, error) {
	block, rest := pem.Decode([]byte(strings.TrimSpace(raw)))
	if block == nil {
		return nil, fmt.Errorf("not a PEM public key (-----BEGIN PUBLIC KEY-----)")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("more than one PEM block: give each key apart")
	}
	switch {
	case block.Type == "PUBLIC KEY":
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing the public key: %w", err)
		}
		return key, nil
	case block.Type == "RSA PUBLIC KEY":
		key, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing the RSA public key: %w", err)
		}
		return key, nil
	case block.Type == "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing the certificate: %w", err)
		}
		return cert.PublicKey, nil
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return nil, fmt.Errorf("a private key (PEM %q): give its public key", block.Type)
	default:
		return nil, fmt.Errorf("a PEM %q block is not a public key", block.Type)
	}
}

// suits returns an error when key cannot verify r's alg, naming both.
func (r rule) suits(key any) error {
	ok := false
	switch k := key.(type) {
	case *rsa.PublicKey:
		if r.kind == rsaKey && k.N.BitLen() < minRSABits {
			return fmt.Errorf("an RSA key of %d bits is too short for %s: RFC 7518 asks for %d bits at least", k.N.BitLen(), r.alg, minRSABits)
		}
		ok = r.kind == rsaKey
	case *ecdsa.PublicKey:
		ok = r.kind == ecdsaKey && k.Curve.Params().Name == r.curve
	case ed25519.PublicKey:
		ok = r.kind == ed25519Key && len(k) == ed25519.PublicKeySize
	}
	if !ok {
		return fmt.Errorf("%s cannot verify %s", describeKey(key), r.alg)
	}
	return nil
}

// describeKey names the type of a key for error messages.
func describeKey(key any) string {
	switch k := key.(type) {
	case []byte:
		return "an HMAC secret"
	case *rsa.PublicKey:
		return "an RSA key"
	case *ecdsa.PublicKey:
		return "an ECDSA " + k.Curve.Params().Name + " key"
	case ed25519.PublicKey:
		return "an Ed25519 key"
	default:
		return fmt.Sprintf("a key of type %T", key)
	}
}
