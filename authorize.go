package caddysse

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ssehub/caddy-sse/access"
)

// Who may read and publish which topics (SPEC section 10): a route's
// allow patterns, and the signed token its requests carry. A guard checks
// a request once, before anything is subscribed or published: the token
// (401 when it is missing or invalid), then every topic the request names
// (403 for the first one neither allow nor the token grants). The token is
// not kept: a stream keeps its expiry, and its subject.

// TokenConfig asks every request of a route for a signed token (a JWT,
// RFC 7519), looked for in the Authorization header (Bearer), then the
// cookie, then the query parameter. Its "sse" claim,
// {"subscribe": [patterns], "publish": [patterns]}, lists the topics it
// grants; its "exp" (exactly), "nbf" (with 30 s of leeway), "iss" and
// "aud" are checked. Its claims are placeholders for the route's topic,
// allow and max_streams_per: {http.sse.token.sub} and
// {http.sse.token.claims.<name>}.
type TokenConfig struct {
	// Keys that verify tokens: HMAC secrets for an HS* alg, PEM public
	// keys (RSA, ECDSA, Ed25519) for the others. The placeholders
	// {env.*} and {file.*} are replaced when the config is loaded. A
	// token signed with any of the keys is accepted, so that a key can
	// be rotated.
	Keys []string `json:"keys,omitempty"`

	// The URL of an identity provider's key set (JWKS), instead of keys:
	// fetched when the config is loaded, cached and refreshed in the
	// background, never on a request's path while a key is cached. If it
	// cannot be fetched, Caddy starts all the same and refuses tokens,
	// saying why, until it can.
	JWKS string `json:"jwks,omitempty"`

	// The signing algorithm of the tokens: HS256, HS384, HS512, RS256,
	// RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA.
	// Required: a token of any other algorithm, "none" included, is
	// refused.
	Alg string `json:"alg,omitempty"`

	// When set, a token's "iss" must be this.
	Issuer string `json:"issuer,omitempty"`

	// When set, a token's "aud" must name this.
	Audience string `json:"audience,omitempty"`

	// The query parameter that may carry the token (EventSource cannot
	// send headers). Default: "token".
	Query string `json:"query,omitempty"`

	// The cookie that may carry the token. Default: none.
	Cookie string `json:"cookie,omitempty"`
}

// DefaultTokenQuery is the query parameter that carries a token by default.
const DefaultTokenQuery = "token"

// tokenPlaceholderPrefix begins the placeholders of a request's token.
const tokenPlaceholderPrefix = "http.sse.token."

// guard checks the requests of a route against its allow patterns and
// its token. A nil guard lets every request through.
type guard struct {
	allow    []string // templates, with placeholders
	static   []string // allow when no template has placeholders; nil otherwise
	verifier *access.Verifier
	query    string // the token's query parameter
	cookie   string // the token's cookie, if any
	publish  bool   // whether the token's publish grants apply, else its subscribe grants
}

// newGuard returns the guard of a route's allow and token, or nil when
// the route has neither.
func newGuard(allow []string, tc *TokenConfig, publish bool) (*guard, error) {
	if len(allow) == 0 && tc == nil {
		return nil, nil
	}
	g := &guard{allow: allow, publish: publish}
	for _, p := range allow {
		if err := validateTopic(p); err != nil {
			return nil, fmt.Errorf("allow: %w", err)
		}
	}
	if !strings.Contains(strings.Join(allow, ""), "{") {
		g.static = allow
	}
	if tc == nil {
		return g, nil
	}
	v, err := newVerifier(tc)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	g.verifier = v
	g.query, g.cookie = tc.Query, tc.Cookie
	if g.query == "" {
		g.query = DefaultTokenQuery
	}
	return g, nil
}

// newVerifier returns the verifier of a token config, its keys' {env.*}
// and {file.*} placeholders replaced.
func newVerifier(tc *TokenConfig) (*access.Verifier, error) {
	repl := caddy.NewReplacer()
	keys := make([]string, len(tc.Keys))
	for i, k := range tc.Keys {
		keys[i] = repl.ReplaceKnown(k, "")
		if keys[i] == "" {
			return nil, fmt.Errorf("key %d is empty once its placeholders are replaced (is the file or the environment variable there?)", i+1)
		}
	}
	return access.NewVerifier(access.Config{Keys: keys, JWKS: tc.JWKS, Alg: tc.Alg,
		Issuer: tc.Issuer, Audience: tc.Audience})
}

// close stops the guard's background work (a JWKS's refreshes).
func (g *guard) close() {
	if g != nil && g.verifier != nil {
		g.verifier.Close()
	}
}

// errNoToken refuses a request that carries no token.
var errNoToken = errors.New("this endpoint needs a token: send it in the Authorization header (Bearer), or in its cookie or query parameter")

// authenticate finds the request's token and verifies it. It returns nil
// and no error when the route asks for none. An expired token (otherwise
// valid) is returned with an error wrapping access.ErrExpired.
func (g *guard) authenticate(r *http.Request) (*access.Token, error) {
	if g == nil || g.verifier == nil {
		return nil, nil
	}
	raw := g.find(r)
	if raw == "" {
		return nil, errNoToken
	}
	return g.verifier.Verify(raw, time.Now())
}

// find returns the request's token, the first of: the Authorization
// header's Bearer credentials, the cookie, the query parameter.
func (g *guard) find(r *http.Request) string {
	if auth := r.Header.Get("Authorization"); auth != "" {
		if scheme, cred, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(cred)
		}
	}
	if g.cookie != "" {
		if c, err := r.Cookie(g.cookie); err == nil && c.Value != "" {
			return c.Value
		}
	}
	return queryParam(r.URL.RawQuery, g.query)
}

// queryParam returns the first value of the query parameter name in a raw
// query, unescaped, without building a map.
func queryParam(raw, name string) string {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		key, value, _ := strings.Cut(pair, "=")
		if unescape(key) == name {
			return unescape(value)
		}
	}
	return ""
}

// unauthorized is the refusal of a request whose token is missing or
// invalid: 401, with a challenge (RFC 6750).
func unauthorized(err error) *requestError {
	challenge := `Bearer realm="sse"`
	if !errors.Is(err, errNoToken) {
		challenge += `, error="invalid_token"`
	}
	return &requestError{status: http.StatusUnauthorized, msg: err.Error(), challenge: challenge}
}

// tokenPlaceholders answers a request's placeholders {http.sse.token.sub}
// and {http.sse.token.claims.<name>}. Its claims are dropped once the
// route's templates have been evaluated, so that a stream does not keep
// them.
type tokenPlaceholders struct {
	sub string
	tok *access.Token // nil once dropped
}

// usesTokenPlaceholders reports whether one of a route's templates has a
// placeholder of its token: only then are they set (a stream would keep
// them).
func usesTokenPlaceholders(templates ...[]string) bool {
	for _, list := range templates {
		for _, t := range list {
			if strings.Contains(t, "{"+tokenPlaceholderPrefix) {
				return true
			}
		}
	}
	return false
}

// setPlaceholders makes tok's claims placeholders of r's replacer, and
// returns them, to be dropped once the route's templates are evaluated, by
// a request that lives on; nil for no token, or when the route's templates
// have none of them (want).
func setPlaceholders(r *http.Request, tok *access.Token, want bool) *tokenPlaceholders {
	if tok == nil || !want {
		return nil
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return nil
	}
	p := &tokenPlaceholders{sub: tok.Subject, tok: tok}
	repl.Map(p.replace)
	return p
}

// replace implements caddy.ReplacerFunc.
func (p *tokenPlaceholders) replace(key string) (any, bool) {
	rest, ok := strings.CutPrefix(key, tokenPlaceholderPrefix)
	if !ok {
		return nil, false
	}
	if rest == "sub" {
		return p.sub, p.sub != ""
	}
	name, ok := strings.CutPrefix(rest, "claims.")
	if !ok || p.tok == nil {
		return nil, false
	}
	return p.tok.Claim(name)
}

// drop forgets the claims; the subject stays, for the access log.
func (p *tokenPlaceholders) drop() {
	if p != nil {
		p.tok = nil
	}
}

// grants are the topic patterns a request may use: the route's allow,
// evaluated for it, and its token's grants.
type grants struct {
	allow      []string
	allowSet   bool // the route has allow: allow decides, even when empty
	token      []string
	tokenSet   bool // the token has an sse claim: token decides
	tokenBlind bool // a token without an sse claim, on a route without allow: nothing is granted
}

// grantsFor returns what r, with its verified token tok, may use.
func (g *guard) grantsFor(r *http.Request, tok *access.Token) *grants {
	if g == nil {
		return nil
	}
	gr := &grants{allowSet: len(g.allow) > 0}
	if gr.allowSet {
		gr.allow = g.static
		if gr.allow == nil {
			gr.allow = expandPatterns(r, g.allow)
		}
	}
	if tok != nil {
		gr.tokenSet = tok.Grants
		if g.publish {
			gr.token = tok.Publish
		} else {
			gr.token = tok.Subscribe
		}
		gr.tokenBlind = !tok.Grants && !gr.allowSet
	}
	return gr
}

// check refuses, with 403, the first of topics that gr does not grant.
func (gr *grants) check(topics []string) *requestError {
	if gr == nil {
		return nil
	}
	for _, t := range topics {
		if why := gr.refuses(t); why != "" {
			return &requestError{status: http.StatusForbidden, msg: fmt.Sprintf("topic %q is not allowed: %s", t, why)}
		}
	}
	return nil
}

// checkPatterns refuses, with 403, the first of patterns that gr does not
// cover: a pattern is granted when every topic it can match is
// (access.Covers), by allow and by the token alike.
func (gr *grants) checkPatterns(patterns []string) *requestError {
	if gr == nil {
		return nil
	}
	for _, p := range patterns {
		why := ""
		switch {
		case gr.tokenBlind:
			why = "the token has no sse claim, and this route has no allow patterns: it grants no topic"
		case gr.tokenSet && !access.Covers(gr.token, p):
			why = "the token does not grant every topic it matches"
		case gr.allowSet && !access.Covers(gr.allow, p):
			why = "this route's allow patterns do not match every topic it matches"
		}
		if why != "" {
			return &requestError{status: http.StatusForbidden, msg: fmt.Sprintf("topic pattern %q is not allowed: %s", p, why)}
		}
	}
	return nil
}

// refuses says why gr does not grant topic, or "" when it does.
func (gr *grants) refuses(topic string) string {
	switch {
	case gr.tokenBlind:
		return "the token has no sse claim, and this route has no allow patterns: it grants no topic"
	case gr.tokenSet && !access.MatchAny(gr.token, topic):
		return "the token does not grant it"
	case gr.allowSet && !access.MatchAny(gr.allow, topic):
		return "this route's allow patterns do not match it"
	}
	return ""
}

// expandPatterns evaluates allow templates for r. A placeholder whose
// value is empty or unknown, or holds a "/" or a "*", drops its pattern:
// a value is one literal segment, never a wildcard or several segments
// (a user called "*" gets no access to every user's topics).
func expandPatterns(r *http.Request, templates []string) []string {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	out := make([]string, 0, len(templates))
	for _, tmpl := range templates {
		if repl == nil || !strings.Contains(tmpl, "{") {
			out = append(out, tmpl)
			continue
		}
		p, err := repl.ReplaceFunc(tmpl, literalSegment)
		if err != nil || p == "" {
			continue
		}
		out = append(out, p)
	}
	return out
}

// errNotASegment drops a pattern whose placeholder's value is not one
// literal segment.
var errNotASegment = errors.New("a placeholder's value is empty, or holds a / or a *")

// literalSegment is the caddy.ReplacementFunc of allow patterns: a value
// must be one literal segment.
func literalSegment(_ string, val any) (any, error) {
	s := caddy.ToString(val)
	if s == "" || strings.ContainsAny(s, "/*") {
		return nil, errNotASegment
	}
	return s, nil
}

// expiredData is the data of the expired event.
type expiredData struct {
	LastEventID string `json:"last_event_id"`
}

// expiredRetry is the least retry hint of a stream ended because its token
// expired or an administrator disconnected it: a page that does not
// handle the event comes back slowly.
const expiredRetry = 30 * time.Second
