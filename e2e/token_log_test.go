package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// readmeLogFilter returns the log directive that docs/access-control.md
// shows to keep tokens out of the access log, as it is there.
func readmeLogFilter(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "access-control.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i := strings.Index(readme, "\tlog {\n\t\tformat filter {")
	if i < 0 {
		t.Fatal("docs/access-control.md shows no log filter for tokens; update this test")
	}
	end := strings.Index(readme[i:], "\n\t}\n")
	block := readme[i : i+end+3]
	if !strings.Contains(block, "delete token") {
		t.Fatalf("the log filter of docs/access-control.md does not delete the token:\n%s", block)
	}
	return strings.TrimSpace(block)
}

// logTokenKey is the HS256 secret of TestTokenNeverLogged.
const logTokenKey = "e2e-log-test-key-0123456789abcdef0123"

// TestTokenNeverLogged runs the production config of docs/access-control.md (an
// access log whose filter deletes the token's query parameter) at debug
// level, sends tokens every way a client can (query, header, cookie;
// valid, expired, badly signed) to both directives, and greps the whole
// output of the process for them: no token, nor its signature, is there.
func TestTokenNeverLogged(t *testing.T) {
	t.Parallel()
	token := `token {
			key ` + logTokenKey + `
			alg HS256
			cookie sse_token
		}`
	srv := opsStart(t, 2440, 8440, "debug", readmeLogFilter(t)+`
	sse /events {
		`+token+`
	}
	sse_publish /publish {
		`+token+`
	}`)
	sign := func(exp time.Duration, key string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice",
			"exp": time.Now().Add(exp).Unix(), "sse": map[string]any{"subscribe": []string{"**"}, "publish": []string{"**"}}}).
			SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid, expired, forged := sign(time.Hour, logTokenKey), sign(-time.Minute, logTokenKey), sign(time.Hour, strings.Repeat("k", 40))
	client := ssetest.NewClient()

	s := ssetest.OpenT(t, client, srv.base+"/events?topic=t&token="+valid, nil)
	opsPublish(t, srv.base+"/publish?token="+valid, "topic=t&data=hello")
	if f := s.EventT(t, opsWait); f.Data != "hello" {
		t.Fatalf("got %q", f.Data)
	}
	s.Close()
	opsReadToEnd(t, ssetest.OpenT(t, client, srv.base+"/events?topic=t&token="+expired, nil))
	for _, h := range []http.Header{
		{"Authorization": {"Bearer " + forged}},
		{"Cookie": {"sse_token=" + forged}},
		{"Authorization": {"Bearer " + valid}},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.base+"/events?topic=t&token="+forged, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	for _, tok := range []string{expired, forged} {
		req, _ := http.NewRequest(http.MethodPost, srv.base+"/publish?token="+tok, strings.NewReader("topic=t&data=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}

	var access []map[string]any
	opsEventually(t, "the access log has every request", func() bool {
		access = opsLogLines(srv.Log(), "handled request")
		return len(access) >= 7
	})
	log := srv.Log()
	for name, tok := range map[string]string{"valid": valid, "expired": expired, "forged": forged} {
		signature := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(log, signature) {
			t.Fatalf("the %s token is in the log:\n%s", name, log)
		}
	}
	if !strings.Contains(log, `"uri":"/events?topic=t`) {
		t.Fatalf("the access log does not show the requests' other parameters:\n%s", log)
	}
}
