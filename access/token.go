package access

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config configures a Verifier.
type Config struct {
	// Keys verify tokens: HMAC secrets for an HS* alg, PEM public keys
	// (RSA, ECDSA, Ed25519) for the others. A token signed with any of
	// them is accepted: several keys let a key be rotated.
	//
	// An HMAC secret is taken as it is given, and must be as long as the
	// alg's hash at least (RFC 7518 section 3.2): 32 bytes for HS256, 48
	// for HS384, 64 for HS512; a PEM key is refused as an HMAC secret. A
	// PEM key is a "PUBLIC KEY" (PKIX), an "RSA PUBLIC KEY" (PKCS #1) or
	// a "CERTIFICATE", of the type the alg asks for: RSA of 2048 bits or
	// more for RS* and PS*, ECDSA on P-256, P-384 or P-521 for ES256,
	// ES384 or ES512, Ed25519 for EdDSA.
	Keys []string
	// JWKS is the URL of an identity provider's key set, instead of Keys:
	// fetched in the background, cached and refreshed; never fetched on
	// the request path. Only its keys that suit Alg are used. It cannot
	// serve an HS* alg (a shared secret is not published).
	JWKS string
	// Alg is the only signing algorithm accepted (HS256, HS384, HS512,
	// RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512,
	// EdDSA). Tokens of any other alg, "none" included, are refused.
	Alg string
	// Issuer and Audience, when set, must be the token's "iss" and one of
	// its "aud".
	Issuer   string
	Audience string
	// Refresh is how often a JWKS is fetched again. Default: 1 hour.
	// While a fetch fails, it is tried again sooner: after 1 second, then
	// twice as long each time up to 1 minute (neither longer than
	// Refresh).
	Refresh time.Duration
}

// NotBeforeLeeway is how far in the future a token's "nbf" may be, for
// clocks that disagree.
const NotBeforeLeeway = 30 * time.Second

// MaxTokenSize is the largest token Verify reads; a larger one is
// refused as invalid without being parsed.
const MaxTokenSize = 8 << 10

// Errors of Verify.
var (
	// ErrExpired is a token whose "exp" has passed (and is otherwise
	// valid: well-formed, well signed, of the right issuer and audience).
	ErrExpired = errors.New("the token has expired")
	// ErrInvalid wraps every other reason to refuse a token: malformed,
	// a signature that does not verify, another alg than the one
	// configured (none included), a wrong issuer or audience, not valid
	// yet (nbf, 30 s of leeway), too large; its message says which.
	ErrInvalid = errors.New("invalid token")
	// ErrNoKey is a token whose key cannot be had now: a JWKS that could
	// not be fetched yet, or that has no key for the token (its "kid" is
	// unknown: the JWKS is then fetched again, in the background). It is
	// refused as invalid, with a message that says so.
	ErrNoKey = errors.New("no key to verify the token with")
)

// Token is what a verified token grants, kept while a request is served;
// a stream keeps only its expiry and subject.
type Token struct {
	// Subject is the "sub" claim, or "".
	Subject string
	// Expires is the "exp" claim; zero when the token has none.
	Expires time.Time
	// Grants is set when the token has an "sse" claim; Subscribe and
	// Publish are its patterns then.
	Grants    bool
	Subscribe []string
	Publish   []string
	claims    *tokenClaims // read by Claim
}

// Claim returns the token's top-level claim name as a string, for the
// placeholders {http.sse.token.claims.<name>}: a string as it is, a
// number written out ("1.7e9" is "1700000000"), a boolean as true or
// false; false for a claim that the token has not, or whose value is an
// object, an array or null.
func (t *Token) Claim(name string) (string, bool) {
	if t.claims == nil {
		return "", false
	}
	m, ok := t.claims.get(name)
	switch {
	case !ok:
		return "", false
	case m.kind == kindString, m.kind == kindBool:
		return m.text, true
	case m.kind == kindNumber:
		return formatNumber(m.text), true
	}
	return "", false
}

// Verifier verifies tokens against a Config. It is safe for concurrent
// use.
type Verifier struct {
	verifier // the implementation
}

// NewVerifier returns a verifier for cfg, or an error naming what is wrong
// with it (an unknown alg, a key that does not suit it). A JWKS that
// cannot be fetched yet is not an error: tokens are refused with
// ErrNoKey until it can. NewVerifier waits for a JWKS's first fetch for
// 2 seconds at most, so that the tokens sent just after start are not
// refused when the JWKS answers promptly.
func NewVerifier(cfg Config) (*Verifier, error) {
	return newVerifier(cfg)
}

// Verify checks raw at now and returns what it grants, or an error:
// ErrExpired for a token that is valid but expired (the Token is returned
// with it, for its subject), else one wrapping ErrInvalid or ErrNoKey
// whose message says why. The token's text is never in the error.
func (v *Verifier) Verify(raw string, now time.Time) (*Token, error) {
	return v.verify(raw, now)
}

// Close stops the verifier's background work (a JWKS's refresh), and
// waits for it to end.
func (v *Verifier) Close() {
	v.close()
}

// verifier verifies tokens with keys given, or those of a JWKS.
type verifier struct {
	rule     rule
	issuer   string
	audience string
	parser   *jwt.Parser
	keyfunc  jwt.Keyfunc
	jwks     *jwks // nil with keys given

	// With keys given: the alg's signing method and the keys, for
	// verifyKeys.
	method jwt.SigningMethod
	keys   []jwt.VerificationKey
}

// newVerifier validates cfg and builds its verifier; for a JWKS, it
// starts the fetches.
func newVerifier(cfg Config) (*Verifier, error) {
	v, err := buildVerifier(cfg)
	if err != nil {
		return nil, err
	}
	if v.jwks != nil {
		v.jwks.start(firstFetchWait)
	}
	return v, nil
}

// buildVerifier validates cfg and builds its verifier, a JWKS's fetches
// not started.
func buildVerifier(cfg Config) (*Verifier, error) {
	r, err := ruleFor(cfg.Alg)
	if err != nil {
		return nil, err
	}
	switch {
	case len(cfg.Keys) > 0 && cfg.JWKS != "":
		return nil, fmt.Errorf("both keys and a jwks: give one of them")
	case len(cfg.Keys) == 0 && cfg.JWKS == "":
		return nil, fmt.Errorf("no key: give a key or a jwks")
	case cfg.Refresh < 0:
		return nil, fmt.Errorf("refresh %s is negative", cfg.Refresh)
	}
	v := &Verifier{verifier{
		rule:     r,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		// The parser checks the alg and the signature only: the claims
		// are checked by grant, for exp is to be checked without the
		// leeway nbf has.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{r.alg}),
			jwt.WithoutClaimsValidation()),
	}}
	if cfg.JWKS == "" {
		v.keys, err = parseKeys(cfg.Keys, r)
		if err != nil {
			return nil, err
		}
		v.keyfunc = staticKeys(v.keys)
		v.method = jwt.GetSigningMethod(r.alg)
		return v, nil
	}
	v.jwks, err = newJWKS(cfg.JWKS, r, cfg.Refresh)
	if err != nil {
		return nil, err
	}
	v.keyfunc = v.jwks.key
	return v, nil
}

// parseKeys parses the keys given.
func parseKeys(raw []string, r rule) ([]jwt.VerificationKey, error) {
	keys := make([]jwt.VerificationKey, len(raw))
	for i, k := range raw {
		key, err := parseKey(i+1, k, r)
		if err != nil {
			return nil, err
		}
		keys[i] = key
	}
	return keys, nil
}

// staticKeys returns the keyfunc that hands the keys given to the parser:
// the key, or a jwt.VerificationKeySet of them all (tried in turn).
func staticKeys(keys []jwt.VerificationKey) jwt.Keyfunc {
	set := keySetOf(keys)
	return func(*jwt.Token) (any, error) { return set, nil }
}

// keySetOf returns what a keyfunc returns for keys: the key when there is
// one, else a jwt.VerificationKeySet; nil for none.
func keySetOf(keys []jwt.VerificationKey) any {
	switch len(keys) {
	case 0:
		return nil
	case 1:
		return keys[0]
	default:
		return jwt.VerificationKeySet{Keys: keys}
	}
}

// keyError carries an error of a keyfunc through the parser, to be
// returned as it is.
type keyError struct{ err error }

// Error returns the error's message.
func (e *keyError) Error() string { return e.err.Error() }

// Unwrap returns the error.
func (e *keyError) Unwrap() error { return e.err }

// verify checks raw at now: its size, its alg, its signature, then its
// claims.
func (v *verifier) verify(raw string, now time.Time) (*Token, error) {
	switch {
	case raw == "":
		return nil, fmt.Errorf("%w: no token", ErrInvalid)
	case len(raw) > MaxTokenSize:
		return nil, fmt.Errorf("%w: the token is larger than %d bytes", ErrInvalid, MaxTokenSize)
	case strings.Count(raw, ".") != 2:
		return nil, fmt.Errorf("%w: malformed: not three parts separated by dots", ErrInvalid)
	}
	if v.jwks == nil {
		c, err := v.verifyKeys(raw)
		if err != nil {
			return nil, err
		}
		return v.grant(c, now)
	}
	c := &tokenClaims{}
	tok, err := v.parser.ParseWithClaims(raw, c, v.keyfunc)
	if err != nil {
		return nil, v.refusal(tok, err)
	}
	if !c.parsed { // "null"
		return nil, fmt.Errorf("%w: malformed: %w", ErrInvalid, errNotObject)
	}
	return v.grant(c, now)
}

// verifyKeys checks a token of three parts against the keys given, as
// the parser does but at a third of its cost: the header's alg must be
// the one configured, the signature is checked by golang-jwt's signing
// method of that alg with each key in turn, and only then are the claims
// read.
func (v *verifier) verifyKeys(raw string) (*tokenClaims, error) {
	h64, rest, _ := strings.Cut(raw, ".")
	p64, s64, _ := strings.Cut(rest, ".")
	if err := v.checkHeader(h64); err != nil {
		return nil, err
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed: the signature is not base64url: %v", ErrInvalid, err)
	}
	signing := raw[:len(h64)+1+len(p64)]
	verified := false
	for _, k := range v.keys {
		if v.method.Verify(signing, sig, k) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, fmt.Errorf("%w: the signature does not verify", ErrInvalid)
	}
	payload, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed: the claims are not base64url: %v", ErrInvalid, err)
	}
	if !json.Valid(payload) {
		return nil, fmt.Errorf("%w: malformed: the claims are not valid JSON", ErrInvalid)
	}
	c := &tokenClaims{}
	if err := c.UnmarshalJSON(payload); err != nil {
		return nil, fmt.Errorf("%w: malformed: %w", ErrInvalid, err)
	}
	return c, nil
}

// checkHeader checks a token's header: a JSON object whose alg is the
// one configured.
func (v *verifier) checkHeader(h64 string) error {
	var buf [512]byte
	header, err := decodeHeader(buf[:], h64)
	if err != nil {
		return err
	}
	if !json.Valid(header) {
		return fmt.Errorf("%w: malformed: the header is not valid JSON", ErrInvalid)
	}
	var mbuf [8]member
	members, err := appendMembers(mbuf[:0], string(header))
	if err != nil {
		return fmt.Errorf("%w: malformed: the header is not a JSON object", ErrInvalid)
	}
	alg, ok := lastMember(members, "alg")
	switch {
	case !ok || alg.kind != kindString:
		return fmt.Errorf("%w: malformed: the header has no alg", ErrInvalid)
	case alg.text != v.rule.alg:
		return fmt.Errorf("%w: signed with alg %.20q, want %s", ErrInvalid, alg.text, v.rule.alg)
	}
	return nil
}

// decodeHeader decodes a token's base64url header into buf, when it fits,
// else into memory of its own.
func decodeHeader(buf []byte, h64 string) ([]byte, error) {
	enc := base64.RawURLEncoding
	if enc.DecodedLen(len(h64)) > len(buf) {
		buf = make([]byte, enc.DecodedLen(len(h64)))
	}
	n, err := enc.Decode(buf, []byte(h64))
	if err != nil {
		return nil, fmt.Errorf("%w: malformed: the header is not base64url: %v", ErrInvalid, err)
	}
	return buf[:n], nil
}

// refusal turns an error of the parser into one that says why in plain
// words, wrapping ErrInvalid (or ErrNoKey, from the JWKS).
func (v *verifier) refusal(tok *jwt.Token, err error) error {
	var ke *keyError
	if errors.As(err, &ke) {
		return ke.err
	}
	if tok != nil && tok.Header != nil {
		alg, ok := tok.Header["alg"].(string)
		switch {
		case !ok:
			return fmt.Errorf("%w: malformed: the header has no alg", ErrInvalid)
		case alg != v.rule.alg:
			return fmt.Errorf("%w: signed with alg %.20q, want %s", ErrInvalid, alg, v.rule.alg)
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		detail := strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": ")
		return fmt.Errorf("%w: malformed: %s", ErrInvalid, detail)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: the signature does not verify", ErrInvalid)
	default:
		return fmt.Errorf("%w: %s", ErrInvalid, err.Error())
	}
}

// grant checks the claims of a well-signed token at now, and returns what
// it grants. An expired token is returned with an error wrapping
// ErrExpired.
func (v *verifier) grant(c *tokenClaims, now time.Time) (*Token, error) {
	t := &Token{}
	var err error
	if t.Subject, err = c.str("sub"); err != nil {
		return nil, err
	}
	t.Subject = strings.Clone(t.Subject) // kept by streams: not the whole claims' JSON with it
	if err := v.checkIssuer(c); err != nil {
		return nil, err
	}
	if err := v.checkAudience(c); err != nil {
		return nil, err
	}
	nbf, hasNbf, err := c.date("nbf")
	if err != nil {
		return nil, err
	}
	if hasNbf && now.Add(NotBeforeLeeway).Before(nbf) {
		return nil, fmt.Errorf("%w: not valid before %s", ErrInvalid, nbf.UTC().Format(time.RFC3339))
	}
	exp, hasExp, err := c.date("exp")
	if err != nil {
		return nil, err
	}
	if err := c.readGrants(t); err != nil {
		return nil, err
	}
	t.claims = c
	if hasExp {
		t.Expires = exp
		// RFC 7519 section 4.1.4: not accepted "on or after" exp.
		if !now.Before(exp) {
			return t, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
		}
	}
	return t, nil
}

// checkIssuer checks the "iss" claim, when an issuer is configured.
func (v *verifier) checkIssuer(c *tokenClaims) error {
	if v.issuer == "" {
		return nil
	}
	iss, err := c.str("iss")
	switch {
	case err != nil:
		return err
	case iss == v.issuer:
		return nil
	case iss == "":
		return fmt.Errorf("%w: no issuer, want %q", ErrInvalid, v.issuer)
	default:
		return fmt.Errorf("%w: issuer %.100q, want %q", ErrInvalid, iss, v.issuer)
	}
}

// checkAudience checks that the "aud" claim (a string, or a list of them)
// has the audience, when one is configured.
func (v *verifier) checkAudience(c *tokenClaims) error {
	if v.audience == "" {
		return nil
	}
	m, ok := c.get("aud")
	if m.kind == kindString { // the common case, without allocating
		if m.text != v.audience {
			return fmt.Errorf("%w: audience %.100q, want %q", ErrInvalid, m.text, v.audience)
		}
		return nil
	}
	aud, err := c.audience()
	switch {
	case err != nil:
		return err
	case !ok || aud == nil:
		return fmt.Errorf("%w: no audience, want %q", ErrInvalid, v.audience)
	case slices.Contains(aud, v.audience):
		return nil
	default:
		return fmt.Errorf("%w: none of the %d audiences is %q", ErrInvalid, len(aud), v.audience)
	}
}

// close stops the JWKS's fetches, if any.
func (v *verifier) close() {
	if v.jwks != nil {
		v.jwks.close()
	}
}
