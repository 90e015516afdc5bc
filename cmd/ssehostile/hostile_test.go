//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// Test ports of this package, before SSE_TEST_PORT_OFFSET: the admin API
// on 2760, the plain site on 8760, the HTTPS site on 8761 (TCP and UDP).
const (
	testAdminBase = 2760
	testHTTPBase  = 8760
	testHTTPSBase = 8761
)

// runAttack runs ssehostile with args against the current tree's Caddy
// and decodes its JSON line.
func runAttack(t *testing.T, caddy string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append(args, "--caddy", caddy, "--label", "test", "--quiet", "--min-duration", "1s", "--cap", "10s",
		"--admin-port", fmt.Sprint(caddyproc.Port(testAdminBase)), "--http-port", fmt.Sprint(caddyproc.Port(testHTTPBase)),
		"--https-port", fmt.Sprint(caddyproc.Port(testHTTPSBase)))
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("ssehostile %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines, want one:\n%s", len(lines), stdout.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, lines[0])
	}
	return m
}

// field returns a number of the line, failing if it is missing.
func field(t *testing.T, m map[string]any, name string) float64 {
	t.Helper()
	v, ok := m[name].(float64)
	if !ok {
		t.Fatalf("no number %s in %v", name, m)
	}
	return v
}

// checkCommon checks what every line has: memory, a stop or reload time
// within the cap, and an honest subscriber that got every event.
func checkCommon(t *testing.T, m map[string]any, end string) {
	t.Helper()
	for _, name := range []string{"rss_kib", "heap_inuse_kib", "rss_base_kib", "heap_inuse_base_kib", "honest_acked",
		"honest_p50_ms", "honest_p99_ms", "honest_max_ms"} {
		if field(t, m, name) <= 0 {
			t.Errorf("%s is not positive", name)
		}
	}
	if s := field(t, m, end); s <= 0 || s >= 10 || m[end+"_over_cap"] != nil {
		t.Errorf("%s = %v s, over the cap: %v", end, s, m[end+"_over_cap"])
	}
	if acked, received := field(t, m, "honest_acked"), field(t, m, "honest_received"); received != acked {
		t.Errorf("the honest subscriber received %v of %v events", received, acked)
	}
	if lost := field(t, m, "honest_lost"); lost != 0 {
		t.Errorf("the honest subscriber lost %v events", lost)
	}
}

// TestAttacks runs a few attacks at a tiny scale against Caddy built from
// this tree. It checks the tool, not the figures.
func TestAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy")
	}
	caddy := caddyproc.Binary(t)
	t.Run("idem-arrays", func(t *testing.T) {
		m := runAttack(t, caddy, "idem-arrays", "--scale", "5", "--batch", "10")
		checkCommon(t, m, "stop_s")
		answers, _ := m["notes"].(map[string]any)["answers"].(map[string]any)
		if answers["status 200"] != float64(5) {
			t.Errorf("answers %v, want 5 of status 200", answers)
		}
	})
	t.Run("stop-pub-body", func(t *testing.T) {
		m := runAttack(t, caddy, "stop-pub-body")
		checkCommon(t, m, "stop_s")
	})
	t.Run("pub-buffers", func(t *testing.T) {
		m := runAttack(t, caddy, "pub-buffers", "--scale", "3", "--line", "65536")
		checkCommon(t, m, "stop_s")
		if accepted := m["notes"].(map[string]any)["accepted"]; accepted != float64(3) {
			t.Errorf("%v streams accepted, want 3", accepted)
		}
	})
	t.Run("reload-h2", func(t *testing.T) {
		m := runAttack(t, caddy, "reload-h2", "--scale", "2", "--events", "20")
		checkCommon(t, m, "reload_s")
		if published := m["notes"].(map[string]any)["published"]; published != float64(20) {
			t.Errorf("%v events published to the stuck clients, want 20", published)
		}
	})
}
