package caddysse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ssehub/caddy-sse/transport"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "tab\tnewline\n\x00\x1f", "é 世界 🎉",
		"line\u2028para\u2029", "<script>&</script>", "a\xe2\x80\xa8"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Errorf("%q: encoded %s, decoded %q (%v)", s, got, back, err)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("x\"\\\u2028\x01")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip() // topics and ids are valid UTF-8
		}
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Fatalf("%q: encoded %s, decoded %q (%v)", s, got, back, err)
		}
	})
}

// TestMaybePublishedIsNotTryAgainLater: a publish whose outcome the
// transport does not know is answered 503 with the transport's advice
// (retry with the same Idempotency-Key), not "try again later", which
// would invite a duplicate; other failures keep "try again later".
func TestMaybePublishedIsNotTryAgainLater(t *testing.T) {
	maybe := publishError(fmt.Errorf("publishing: %w: timeout: %w", transport.ErrUnavailable, transport.ErrMaybePublished))
	if maybe.status != http.StatusServiceUnavailable || strings.Contains(maybe.msg, "try again later") ||
		!strings.Contains(maybe.msg, "retry with the same Idempotency-Key") {
		t.Fatalf("%d %q", maybe.status, maybe.msg)
	}
	down := publishError(fmt.Errorf("publishing: %w: connection refused", transport.ErrUnavailable))
	if down.status != http.StatusServiceUnavailable || !strings.HasSuffix(down.msg, "; try again later") {
		t.Fatalf("%d %q", down.status, down.msg)
	}
}
