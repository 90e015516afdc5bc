package caddysse

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// corsPolicy answers cross-origin requests for the origins it allows.
type corsPolicy struct {
	origins  []string // lowercase, without trailing slash
	wildcard bool     // "*": any origin, without credentials
	methods  string   // allowed methods, for preflights
}

// newCORSPolicy returns nil when no origin is configured.
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
// not allow (403). It reports whether the request goes on to the handler;
// verb says what the handler does, for the refusal ("subscribe").
// p may be nil: no cross-origin requests are configured.
func admit(p *corsPolicy, w http.ResponseWriter, r *http.Request, method, verb string) bool {
	allowed := p.apply(w, r)
	if p != nil && r.Method == http.MethodOptions {
		if !allowed {
			refuseOrigin(w, r, verb)
			return false
		}
		if isPreflight(r) {
			p.preflight(w, r)
			return false
		}
	}
	if r.Method != method {
		allow := method
		if p != nil {
			allow += ", OPTIONS"
		}
		methodNotAllowed(w, r, allow)
		return false
	}
	if !allowed {
		refuseOrigin(w, r, verb)
		return false
	}
	return true
}

// refuseOrigin refuses a request from an origin that is not allowed.
func refuseOrigin(w http.ResponseWriter, r *http.Request, verb string) {
	writeError(w, http.StatusForbidden, "origin "+r.Header.Get("Origin")+" may not "+verb+" here")
}

// isPreflight reports whether r is a CORS preflight request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// apply sets the CORS response headers for r and reports whether its
// origin is allowed. Requests without an Origin header, and those from the
// server's own origin, are always allowed and get no CORS headers.
func (p *corsPolicy) apply(w http.ResponseWriter, r *http.Request) bool {
	if p == nil {
		return true
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
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

// sameOrigin reports whether origin is the origin r was sent to.
func sameOrigin(r *http.Request, origin string) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(origin, scheme+"://"+r.Host)
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
