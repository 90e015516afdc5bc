package caddysse

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
)

// corsPolicy answers cross-origin requests for the origins it allows.
type corsPolicy struct {
	origins  []string // lowercase, without trailing slash
	wildcard bool     // "*": any origin, without credentials
	methods  string   // allowed methods, for preflights
}

// validateOrigins checks cors_origins entries: "*" or scheme://host[:port]
// with the scheme http or https.
func validateOrigins(origins []string) error {
	for _, o := range origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("cors origin %q is not of the form scheme://host[:port]", o)
		}
	}
	return nil
}

// newCORSPolicy returns nil when no origin is configured: then only
// requests without an Origin header or from the server's own origin are
// admitted.
func newCORSPolicy(origins []string, methods string) *corsPolicy {
	if len(origins) == 0 {
		return nil
	}
	p := &corsPolicy{methods: methods}
	for _, o := range origins {
		if o == "*" {
			p.wildcard = true
			continue
		}
		p.origins = append(p.origins, strings.ToLower(strings.TrimSuffix(o, "/")))
	}
	return p
}

// admit answers what comes before a handler's own work: a CORS preflight,
// a method other than method (405, with Allow), an origin the policy does
// not allow (403). It reports whether the request goes on to the handler,
// and else what refused it, for the log ("" for a preflight answered);
// verb says what the handler does, for the refusal ("subscribe").
// p may be nil: no cross-origin requests are configured, and a request
// whose Origin header names another origin than its own is refused, so
// that no other site can make a browser publish or subscribe with the
// cookies or credentials it holds for this one (CSRF).
func admit(p *corsPolicy, w http.ResponseWriter, r *http.Request, method, verb string) (bool, string) {
	allowed := p.apply(w, r)
	if p != nil && r.Method == http.MethodOptions {
		if !allowed {
			return false, refuseOrigin(w, r, verb)
		}
		if isPreflight(r) {
			p.preflight(w, r)
			return false, ""
		}
	}
	if r.Method != method {
		allow := method
		if p != nil {
			allow += ", OPTIONS"
		}
		methodNotAllowed(w, r, allow)
		return false, "method " + r.Method
	}
	if !allowed {
		return false, refuseOrigin(w, r, verb)
	}
	return true, ""
}

// refuseOrigin refuses a request from an origin that is not allowed, and
// says why, for the log.
func refuseOrigin(w http.ResponseWriter, r *http.Request, verb string) string {
	writeError(w, http.StatusForbidden, fmt.Sprintf(
		"origin %s may not %s here: it is neither this site's origin nor one of the route's cors_origins",
		r.Header.Get("Origin"), verb))
	return "origin"
}

// isPreflight reports whether r is a CORS preflight request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// apply sets the CORS response headers for r and reports whether its
// origin is allowed. Requests without an Origin header, and those from the
// server's own origin, are always allowed and get no CORS headers; with a
// nil policy, no other origin is.
func (p *corsPolicy) apply(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if p == nil {
		return origin == "" || sameOrigin(r, origin)
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if origin == "" || sameOrigin(r, origin) {
		return true
	}
	switch {
	case slices.Contains(p.origins, strings.ToLower(origin)):
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	case p.wildcard:
		h.Set("Access-Control-Allow-Origin", "*")
	default:
		return false
	}
	return true
}

// preflight answers an allowed preflight request.
func (p *corsPolicy) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", p.methods)
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", sanitizeHeaderList(req))
	}
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// sameOrigin reports whether origin names the host and port r was sent
// to (its Host header), case-insensitively. The scheme is not compared and
// the ports 80 and 443 count as none on both sides, so that a Caddy behind
// a proxy that terminates TLS (https://example.com in the Origin, Host
// example.com on plain HTTP) still accepts its own pages. An origin that is
// not of the form scheme://host[:port], such as "null", is another origin.
func sameOrigin(r *http.Request, origin string) bool {
	_, hostport, ok := strings.Cut(origin, "://")
	if !ok || hostport == "" || strings.ContainsAny(hostport, "/?#@") {
		return false
	}
	return strings.EqualFold(withoutDefaultPort(hostport), withoutDefaultPort(r.Host))
}

// withoutDefaultPort removes a port 80 or 443 from host:port.
func withoutDefaultPort(hostport string) string {
	if h, ok := strings.CutSuffix(hostport, ":80"); ok {
		return h
	}
	if h, ok := strings.CutSuffix(hostport, ":443"); ok {
		return h
	}
	return hostport
}

// sanitizeHeaderList keeps the valid header names of a comma-separated list.
func sanitizeHeaderList(list string) string {
	var out []string
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name != "" && validHeaderName(name) {
			out = append(out, textproto.CanonicalMIMEHeaderKey(name))
		}
	}
	return strings.Join(out, ", ")
}

func validHeaderName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
