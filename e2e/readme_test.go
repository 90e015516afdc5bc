package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// readmeSnippets returns the caddyfile blocks of docs/publishing.md
// between the markers <!-- snippets: name --> and <!-- /snippets: name -->
// (the docs the README links to).
func readmeSnippets(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "publishing.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- snippets: "+name+" -->")
	section, _, ok2 := strings.Cut(rest, "<!-- /snippets: "+name+" -->")
	if !ok || !ok2 {
		t.Fatalf("docs/publishing.md has no snippets %q; update this test", name)
	}
	var out []string
	for {
		_, after, found := strings.Cut(section, "```caddyfile\n")
		if !found {
			return out
		}
		block, tail, _ := strings.Cut(after, "```")
		out = append(out, block)
		section = tail
	}
}

// TestReadmePublishProtection runs each way docs/publishing.md shows to
// protect the publish route, as it is written there (only a key file's path and
// the application's address are moved to this test's): an allowed
// publisher publishes, and a refused one gets an error status and
// publishes nothing.
func TestReadmePublishProtection(t *testing.T) {
	t.Parallel()
	snippets := readmeSnippets(t, "publish-protection")
	if len(snippets) != 4 {
		t.Fatalf("%d snippets, want 4 (remote_ip, basic_auth, forward_auth, token); update this test", len(snippets))
	}
	key := strings.Repeat("k", 40)
	keyFile := filepath.Join(t.TempDir(), "sse-publish.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := authApp(t)
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(),
		"sse": map[string]any{"publish": []string{"**"}}}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	fromOther := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}

	cases := []struct {
		name            string
		allowed, denied func(url string) *http.Request
		client          *http.Client // of the denied request; default: http.DefaultClient
		status          int          // of the denied request
	}{
		{"remote_ip", form(nil), form(nil), fromOther, http.StatusForbidden},
		{"basic_auth", form(func(r *http.Request) { r.SetBasicAuth("backend", "change-me") }),
			form(func(r *http.Request) { r.SetBasicAuth("backend", "wrong") }), nil, http.StatusUnauthorized},
		{"forward_auth", form(func(r *http.Request) { r.Header.Set("X-App-Key", "let-me") }), form(nil), nil, http.StatusForbidden},
		{"token", form(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }), form(nil), nil, http.StatusUnauthorized},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			site := strings.NewReplacer("/etc/caddy/sse-publish.key", keyFile, "localhost:9000", app).Replace(snippets[i])
			if !strings.Contains(snippets[i], c.name) {
				t.Fatalf("snippet %d is not the %s one:\n%s", i, c.name, snippets[i])
			}
			srv := opsStart(t, 2460+i, 8460+i, "", site)
			published := func() uint64 {
				var hub struct {
					Published uint64 `json:"events_published"`
				}
				opsDecode(t, opsDo(t, http.MethodGet, srv.AdminURL("/sse/hubs/default"), "", "").body, &hub)
				return hub.Published
			}
			client := c.client
			if client == nil {
				client = http.DefaultClient
			}
			resp, err := client.Do(c.denied(srv.base))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != c.status || published() != 0 {
				t.Fatalf("a refused publisher: %d, %d events published; want %d and none", resp.StatusCode, published(), c.status)
			}
			resp, err = http.DefaultClient.Do(c.allowed(srv.base))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || published() != 1 {
				t.Fatalf("an allowed publisher: %d, %d events published; want 200 and one", resp.StatusCode, published())
			}
		})
	}
}

// form returns a function that makes a publish request to a site, changed
// by mod.
func form(mod func(*http.Request)) func(string) *http.Request {
	return func(base string) *http.Request {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/publish",
			strings.NewReader("topic=orders/1&data=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if mod != nil {
			mod(req)
		}
		return req
	}
}

// authApp runs the application that forward_auth asks: it lets through
// the requests with the header X-App-Key: let-me, and answers 403 to the
// others. It returns its address.
func authApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/auth/publish" || r.Header.Get("X-App-Key") != "let-me" {
			http.Error(w, fmt.Sprintf(`{"error":"not allowed to publish (%s)"}`, r.URL.Path), http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
