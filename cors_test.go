package caddysse

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	cases := []struct {
		host, origin string
		same         bool
	}{
		{"example.com", "https://example.com", true},
		{"example.com", "http://example.com", true},
		{"Example.COM", "https://example.com", true},
		{"example.com", "HTTPS://EXAMPLE.COM", true},
		{"example.com:443", "https://example.com", true},
		{"example.com", "https://example.com:443", true},
		{"example.com:80", "http://example.com", true},
		{"example.com", "http://example.com:80", true},
		{"example.com:443", "http://example.com:80", true}, // the scheme is not compared
		{"example.com:8080", "http://example.com:8080", true},
		{"localhost:9080", "http://localhost:9080", true},
		{"[::1]:8080", "http://[::1]:8080", true},
		{"[::1]", "https://[::1]:443", true},
		{"example.com:8080", "http://example.com", false},
		{"example.com", "http://example.com:8080", false},
		{"example.com:8443", "https://example.com:443", false},
		{"example.com:1443", "https://example.com", false},
		{"example.com", "https://evil.example", false},
		{"example.com", "https://example.com.evil.example", false},
		{"example.com", "https://sub.example.com", false},
		{"example.com", "null", false},
		{"example.com", "example.com", false},
		{"example.com", "https://", false},
		{"example.com", "https://example.com/", false},
		{"example.com", "https://user@example.com", false},
		{"", "https://example.com", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Host = c.host
		if got := sameOrigin(r, c.origin); got != c.same {
			t.Errorf("Host %q, Origin %q: same origin %v, want %v", c.host, c.origin, got, c.same)
		}
	}
}

func TestAdmit(t *testing.T) {
	policy := newCORSPolicy([]string{"https://app.example.com/"}, "POST")
	wildcard := newCORSPolicy([]string{"*"}, "POST")
	type want struct {
		admitted    bool
		status      int
		allowOrigin string
		credentials bool
		allow       string
		errContains string
	}
	cases := []struct {
		name    string
		policy  *corsPolicy
		method  string
		origin  string
		preflit bool
		want    want
	}{
		{"no policy, no origin", nil, "POST", "", false, want{admitted: true}},
		{"no policy, same origin", nil, "POST", "https://sse.example.com", false, want{admitted: true}},
		{"no policy, same origin over a TLS proxy", nil, "POST", "https://sse.example.com:443", false, want{admitted: true}},
		{"no policy, foreign origin", nil, "POST", "https://evil.example", false,
			want{status: 403, errContains: "origin https://evil.example may not publish here"}},
		{"no policy, null origin", nil, "POST", "null", false, want{status: 403, errContains: "origin null may not"}},
		{"no policy, other port", nil, "POST", "https://sse.example.com:8443", false, want{status: 403}},
		{"no policy, wrong method", nil, "GET", "", false, want{status: 405, allow: "POST"}},
		{"no policy, wrong method and foreign origin", nil, "PUT", "https://evil.example", false, want{status: 405, allow: "POST"}},
		{"no policy, OPTIONS", nil, "OPTIONS", "https://app.example.com", true, want{status: 405, allow: "POST"}},
		{"policy, allowed origin", policy, "POST", "https://APP.example.com", false,
			want{admitted: true, allowOrigin: "https://APP.example.com", credentials: true}},
		{"policy, same origin", policy, "POST", "http://sse.example.com", false, want{admitted: true}},
		{"policy, no origin", policy, "POST", "", false, want{admitted: true}},
		{"policy, foreign origin", policy, "POST", "https://evil.example", false, want{status: 403, errContains: "cors_origins"}},
		{"policy, allowed origin's other scheme", policy, "POST", "http://app.example.com", false, want{status: 403}},
		{"policy, preflight", policy, "OPTIONS", "https://app.example.com", true,
			want{status: 204, allowOrigin: "https://app.example.com", credentials: true}},
		{"policy, foreign preflight", policy, "OPTIONS", "https://evil.example", true, want{status: 403}},
		{"policy, OPTIONS without preflight", policy, "OPTIONS", "https://app.example.com", false,
			want{status: 405, allow: "POST, OPTIONS", allowOrigin: "https://app.example.com", credentials: true}},
		{"policy, wrong method", policy, "DELETE", "", false, want{status: 405, allow: "POST, OPTIONS"}},
		{"wildcard, any origin", wildcard, "POST", "https://anyone.example", false, want{admitted: true, allowOrigin: "*"}},
		{"wildcard, null origin", wildcard, "POST", "null", false, want{admitted: true, allowOrigin: "*"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, "http://sse.example.com/publish", nil)
			if c.origin != "" {
				r.Header.Set("Origin", c.origin)
			}
			if c.preflit {
				r.Header.Set("Access-Control-Request-Method", "POST")
			}
			w := httptest.NewRecorder()
			admitted, _ := admit(c.policy, w, r, http.MethodPost, "publish")
			if admitted != c.want.admitted {
				t.Fatalf("admitted %v, want %v (%d %s)", admitted, c.want.admitted, w.Code, w.Body)
			}
			if !admitted && w.Code != c.want.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, c.want.status, w.Body)
			}
			if admitted && w.Body.Len() > 0 {
				t.Fatalf("admitted, but answered %s", w.Body)
			}
			h := w.Header()
			if got := h.Get("Access-Control-Allow-Origin"); got != c.want.allowOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, c.want.allowOrigin)
			}
			if got := h.Get("Access-Control-Allow-Credentials") == "true"; got != c.want.credentials {
				t.Fatalf("Access-Control-Allow-Credentials %q", h.Get("Access-Control-Allow-Credentials"))
			}
			if got := h.Get("Allow"); got != c.want.allow {
				t.Fatalf("Allow %q, want %q", got, c.want.allow)
			}
			if c.want.status >= 400 && (h.Get("Content-Type") != "application/json" || !strings.Contains(w.Body.String(), c.want.errContains)) {
				t.Fatalf("error %s (%s), want JSON containing %q", w.Body, h.Get("Content-Type"), c.want.errContains)
			}
		})
	}
}

func TestValidateOrigins(t *testing.T) {
	for _, ok := range []string{"*", "https://app.example.com", "http://localhost:8080", "https://app.example.com/"} {
		if err := validateOrigins([]string{ok}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"app.example.com", "ftp://app.example.com", "https://app.example.com/path", "https://", "null"} {
		if err := validateOrigins([]string{bad}); err == nil || !strings.Contains(err.Error(), "scheme://host[:port]") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
