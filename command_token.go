package caddysse

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sse-token",
		Usage: "--key-file <path> | --key-env <var> [--alg <alg>] [--sub <subject>] [--subscribe <pattern>]... [--publish <pattern>]... [--ttl <duration>] [--issuer <iss>] [--audience <aud>]... [--claim <name>=<value>]...",
		Short: "Mints a signed token for the routes of an sse handler",
		Long: `
Prints a token (a JWT, RFC 7519) for the token checks of the sse handler,
for scripts and tests: a back end normally mints its own.

The token has the claims "iat" (now) and "exp" (now plus --ttl, 15
minutes by default; it must be at least one second: tokens always
expire), "sub" with --sub, "iss" with --issuer, "aud" with --audience
(repeatable), a string claim for each --claim name=value (read by the
placeholders {http.sse.token.claims.<name>}), and "sse":
{"subscribe": [...], "publish": [...]} with the patterns of --subscribe
and --publish (both repeatable). A pattern is split on "/": a segment "*"
matches one segment of a topic, "**" as the last segment the rest of it.
Without --subscribe or --publish, the token has no "sse" claim, and it
grants nothing on a route that has no allow list.

The key is the content of the file --key-file or the value of the
environment variable --key-env (exactly one of them). For HS256 (the
default), HS384 and HS512, it is the shared secret, at least as long as
the hash (32, 48 and 64 bytes), as the routes require; a file is read as the {file.*} placeholder reads it, without one
final line ending, so that the route's key {file.<path>} and
--key-file <path> are the same secret, and a variable is taken as it is,
as {env.<var>} takes it. For RS256, RS384, RS512, PS256, PS384, PS512
(RSA), ES256, ES384, ES512 (ECDSA P-256, P-384, P-521) and EdDSA
(Ed25519), it is a PEM private key: PKCS #8 ("PRIVATE KEY"), PKCS #1
("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"); the route verifies with
its public key.

The token is printed on standard output, followed by a line ending. An
invalid flag, a key that cannot be read, or a key that does not suit
--alg make the command exit with status 1 and a message saying why.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("key-file", "", "File holding the key: a secret for HS*, else a PEM private key")
			cmd.Flags().String("key-env", "", "Environment variable holding the key, instead of --key-file")
			cmd.Flags().String("alg", "HS256", "Signing algorithm: "+strings.Join(mintAlgs, ", "))
			cmd.Flags().String("sub", "", "Subject of the token (the \"sub\" claim)")
			cmd.Flags().StringArray("subscribe", nil, "Topic pattern the token may subscribe to (repeatable)")
			cmd.Flags().StringArray("publish", nil, "Topic pattern the token may publish to (repeatable)")
			cmd.Flags().String("ttl", "15m", "How long the token is valid (at least 1s)")
			cmd.Flags().String("issuer", "", "Issuer of the token (the \"iss\" claim)")
			cmd.Flags().StringArray("audience", nil, "Audience of the token (the \"aud\" claim; repeatable)")
			cmd.Flags().StringArray("claim", nil, "Another claim, name=value, whose value is a string (repeatable)")
			cmd.Args = cobra.NoArgs
			cmd.RunE = plainErrors(cmdToken)
		},
	})
}

// mintAlgs are the signing algorithms caddy sse-token mints with: the
// ones the sse handler verifies.
var mintAlgs = []string{
	"HS256", "HS384", "HS512",
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// mintMinSecret is the shortest HMAC secret accepted for alg, in bytes:
// the size of its hash (RFC 7518 section 3.2), as the routes require.
func mintMinSecret(alg string) int {
	switch alg {
	case "HS384":
		return 48
	case "HS512":
		return 64
	}
	return 32
}

// mintOptions are what caddy sse-token mints a token from.
type mintOptions struct {
	// KeyFile and KeyEnv name where the key is: a file, or an
	// environment variable. Exactly one is set.
	KeyFile string
	KeyEnv  string
	// Alg is the signing algorithm, one of mintAlgs.
	Alg string
	// Subject, Issuer and Audience are the claims sub, iss and aud, when
	// set.
	Subject  string
	Issuer   string
	Audience []string
	// Subscribe and Publish are the patterns of the sse claim, which is
	// there when one of them is not empty.
	Subscribe []string
	Publish   []string
	// Claims are more claims, "name=value", whose values are strings.
	Claims []string
	// TTL is how long the token is valid, at least a second.
	TTL time.Duration
	// Now is the time the token is minted at.
	Now time.Time
}

// mintGrants is the sse claim of a token.
type mintGrants struct {
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
}

// cmdToken implements caddy sse-token.
func cmdToken(fl caddycmd.Flags) (int, error) {
	opts := mintOptions{
		KeyFile: fl.String("key-file"),
		KeyEnv:  fl.String("key-env"),
		Alg:     fl.String("alg"),
		Subject: fl.String("sub"),
		Issuer:  fl.String("issuer"),
		Now:     time.Now(),
	}
	var err error
	for name, dst := range map[string]*[]string{
		"subscribe": &opts.Subscribe,
		"publish":   &opts.Publish,
		"audience":  &opts.Audience,
		"claim":     &opts.Claims,
	} {
		if *dst, err = fl.GetStringArray(name); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("reading --%s: %w", name, err)
		}
	}
	if opts.TTL, err = caddy.ParseDuration(fl.String("ttl")); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--ttl: %w", err)
	}
	token, err := mintToken(opts)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Println(token)
	return caddy.ExitCodeSuccess, nil
}

// mintToken returns the signed token that opts describe, or an error
// saying what is wrong with them.
func mintToken(opts mintOptions) (string, error) {
	method, err := mintMethod(opts.Alg)
	if err != nil {
		return "", err
	}
	claims, err := mintClaims(opts)
	if err != nil {
		return "", err
	}
	raw, source, err := mintKeyMaterial(opts.KeyFile, opts.KeyEnv)
	if err != nil {
		return "", err
	}
	key, err := mintSigningKey(opts.Alg, raw)
	if err != nil {
		return "", fmt.Errorf("the key in %s: %w", source, err)
	}
	signed, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("signing the token with %s: %w", opts.Alg, err)
	}
	return signed, nil
}

// mintMethod returns the signing method of alg, one of mintAlgs.
func mintMethod(alg string) (jwt.SigningMethod, error) {
	if slices.Contains(mintAlgs, alg) {
		return jwt.GetSigningMethod(alg), nil
	}
	return nil, fmt.Errorf("--alg %q: not a signing algorithm of tokens; use one of %s", alg, strings.Join(mintAlgs, " "))
}

// mintReservedClaims are the claims that --claim may not set: the ones
// set by other flags, and the ones the hub reads.
var mintReservedClaims = []string{"sub", "iss", "aud", "exp", "nbf", "iat", "jti", "sse"}

// mintClaims returns the claims of the token that opts describe.
func mintClaims(opts mintOptions) (jwt.MapClaims, error) {
	if opts.TTL < time.Second {
		return nil, fmt.Errorf("--ttl %s: a token must be valid for at least 1s (tokens always expire)", opts.TTL)
	}
	claims := jwt.MapClaims{
		"iat": jwt.NewNumericDate(opts.Now),
		"exp": jwt.NewNumericDate(opts.Now.Add(opts.TTL)),
	}
	if opts.Subject != "" {
		claims["sub"] = opts.Subject
	}
	if opts.Issuer != "" {
		claims["iss"] = opts.Issuer
	}
	for _, aud := range opts.Audience {
		if aud == "" {
			return nil, errors.New("--audience: an empty audience")
		}
	}
	switch len(opts.Audience) {
	case 0:
	case 1:
		claims["aud"] = opts.Audience[0]
	default:
		claims["aud"] = opts.Audience
	}
	for flag, patterns := range map[string][]string{"subscribe": opts.Subscribe, "publish": opts.Publish} {
		for _, p := range patterns {
			if p == "" {
				return nil, fmt.Errorf("--%s: an empty topic pattern", flag)
			}
		}
	}
	if len(opts.Subscribe) > 0 || len(opts.Publish) > 0 {
		claims["sse"] = mintGrants{Subscribe: opts.Subscribe, Publish: opts.Publish}
	}
	for _, c := range opts.Claims {
		name, value, ok := strings.Cut(c, "=")
		switch {
		case !ok || name == "":
			return nil, fmt.Errorf("--claim %q: not of the form name=value", c)
		case slices.Contains(mintReservedClaims, name):
			return nil, fmt.Errorf("--claim %q: the claim %q cannot be set with --claim (claims set otherwise or read by the hub: %s)",
				c, name, strings.Join(mintReservedClaims, " "))
		}
		if _, dup := claims[name]; dup {
			return nil, fmt.Errorf("--claim %q: the claim %q is given twice", c, name)
		}
		claims[name] = value
	}
	return claims, nil
}

// mintKeyMaterial reads the key from the file keyFile or the
// environment variable keyEnv, exactly one of which is set, and returns
// it with a description of where it came from. A file loses one final
// line ending ("\n", then "\r"), as with Caddy's {file.*} placeholder; a
// variable's value is taken as it is, as with {env.*}.
func mintKeyMaterial(keyFile, keyEnv string) ([]byte, string, error) {
	switch {
	case keyFile != "" && keyEnv != "":
		return nil, "", errors.New("give the key with either --key-file or --key-env, not both")
	case keyFile != "":
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, "", fmt.Errorf("reading the key file: %w", err)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
		return b, "file " + keyFile, nil
	case keyEnv != "":
		v, ok := os.LookupEnv(keyEnv)
		if !ok {
			return nil, "", fmt.Errorf("--key-env: the environment variable %s is not set", keyEnv)
		}
		return []byte(v), "environment variable " + keyEnv, nil
	}
	return nil, "", errors.New("no key: give it with --key-file or --key-env")
}

// mintSigningKey returns the signing key of alg from raw: raw itself
// for HS*, else the PEM private key in raw, which must be of the type
// alg signs with.
func mintSigningKey(alg string, raw []byte) (any, error) {
	if strings.HasPrefix(alg, "HS") {
		if n := mintMinSecret(alg); len(raw) < n {
			return nil, fmt.Errorf("a secret of %d bytes is too short for %s: it must be at least %d bytes long", len(raw), alg, n)
		}
		return raw, nil
	}
	key, err := mintPrivateKey(raw)
	if err != nil {
		return nil, err
	}
	want := mintKeyTypeFor(alg)
	if have := mintKeyTypeOf(key); have != want {
		return nil, fmt.Errorf("--alg %s signs with an %s private key, and this one is an %s key", alg, want, have)
	}
	return key, nil
}

// mintPrivateKey returns the private key of the first PEM block of
// raw that is not EC parameters (as openssl writes them before an EC
// key).
func mintPrivateKey(raw []byte) (any, error) {
	rest := raw
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		switch {
		case block == nil:
			return nil, errors.New("no PEM private key (a \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block) in it")
		case block.Type == "EC PARAMETERS":
			continue
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the PEM private key is encrypted; give it decrypted")
		default:
			return nil, fmt.Errorf("a PEM %q block, not a private key (\"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the PEM %q block: %w", block.Type, err)
		}
		return key, nil
	}
}

// mintKeyTypeFor names the type of private key that alg, not HS*, signs
// with.
func mintKeyTypeFor(alg string) string {
	switch alg {
	case "ES256":
		return "ECDSA P-256"
	case "ES384":
		return "ECDSA P-384"
	case "ES512":
		return "ECDSA P-521"
	case "EdDSA":
		return "Ed25519"
	}
	return "RSA" // RS*, PS*
}

// mintKeyTypeOf names the type of a parsed private key, as mintKeyTypeFor does.
func mintKeyTypeOf(key any) string {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return "RSA"
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return "ECDSA P-256"
		case elliptic.P384():
			return "ECDSA P-384"
		case elliptic.P521():
			return "ECDSA P-521"
		}
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PrivateKey:
		return "Ed25519"
	}
	return fmt.Sprintf("unsupported (%T)", key)
}
