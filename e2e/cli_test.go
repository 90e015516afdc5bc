package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// cliResult is what a run of the caddy command did.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCaddyCommand runs the Caddy binary built from cmd/caddy with args
// and stdin, in its own home directory, and waits for it to exit.
func runCaddyCommand(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opsWait)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, caddyproc.Binary(t), args...)
	cmd.Dir = home
	cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "XDG_DATA_HOME=" + home}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running caddy %v: %v", args, err)
	}
	return res
}

// TestSSEPublishCommand runs `caddy sse-publish` against a running Caddy:
// the data comes from the argument, from standard input, or as JSON; the
// event reaches a subscriber with the id the command printed. A refused
// event, an unknown hub, invalid JSON and an unreachable admin API end
// the command with status 1 and a message saying why.
func TestSSEPublishCommand(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2404, 8404, `sse {
		hub chat
	}`, `sse /events
	sse /chat/events {
		hub chat
	}`)
	address := fmt.Sprintf("localhost:%d", srv.adminPort)
	s := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/events?topic=cli&topic=other&topic=default", nil)
	chat := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/chat/events?topic=room", nil)

	published := []struct {
		name   string
		stdin  string
		args   []string
		stream *ssetest.Stream
		typ    string
		data   string
	}{
		{"argument", "", []string{"--topic", "cli", "hello from the shell"}, s, "message", "hello from the shell"},
		{"standard input, final newline dropped", "line 1\nline 2\n", []string{"--topic", "cli", "--event", "log"}, s, "log", "line 1\nline 2"},
		{"json", "", []string{"--topic", "cli", "--json", `{"n": [1, 2]}`}, s, "message", `{"n":[1,2]}`},
		{"json string from standard input", `"a \"quoted\" string"`, []string{"-t", "cli", "--json"}, s, "message", `a "quoted" string`},
		{"two topics, delivered once", "", []string{"--topic", "cli", "--topic", "other", "both"}, s, "message", "both"},
		{"topic default", "", []string{"no topic"}, s, "message", "no topic"},
		{"another hub", "", []string{"--hub", "chat", "--topic", "room", "in chat"}, chat, "message", "in chat"},
	}
	for _, c := range published {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"sse-publish", "--address", address}, c.args...)
			res := runCaddyCommand(t, c.stdin, args...)
			if res.code != 0 {
				t.Fatalf("exit status %d: %s", res.code, res.stderr)
			}
			id := strings.TrimSuffix(res.stdout, "\n")
			f := c.stream.EventT(t, opsWait)
			if f.LastID != id || f.Type != c.typ || f.Data != c.data {
				t.Fatalf("got %s %s %q, want %q %s %q", f.LastID, f.Type, f.Data, id, c.typ, c.data)
			}
		})
	}

	t.Run("admin address from the config file", func(t *testing.T) {
		config := filepath.Join(srv.Dir, "Caddyfile")
		res := runCaddyCommand(t, "", "sse-publish", "--config", config, "--adapter", "caddyfile", "--topic", "cli", "via config")
		if res.code != 0 {
			t.Fatalf("exit status %d: %s", res.code, res.stderr)
		}
		if f := s.EventT(t, opsWait); f.Data != "via config" || f.LastID != strings.TrimSpace(res.stdout) {
			t.Fatalf("got %s %q, printed %q", f.LastID, f.Data, res.stdout)
		}
	})

	failures := []struct {
		name string
		args []string
		msg  string
	}{
		{"invalid topic", []string{"--address", address, "--topic", "a\tb", "x"}, "HTTP 400: topic"},
		{"event type with a line break", []string{"--address", address, "--event", "a\nb", "x"}, "CR, LF or NUL"},
		{"unknown hub", []string{"--address", address, "--hub", "nope", "x"}, `HTTP 404: no hub`},
		{"invalid json", []string{"--address", address, "--json", "{nope"}, "not a valid JSON value"},
		{"no admin API there", []string{"--address", fmt.Sprintf("localhost:%d", caddyproc.Port(2408)), "x"}, "connection refused"},
		{"two arguments", []string{"--address", address, "x", "y"}, "accepts at most 1 arg"},
	}
	for _, c := range failures {
		t.Run(c.name, func(t *testing.T) {
			res := runCaddyCommand(t, "", append([]string{"sse-publish"}, c.args...)...)
			if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, c.msg) || strings.HasPrefix(res.stderr, "{") {
				t.Fatalf("exit status %d, stdout %q, stderr %q; want 1, nothing, and a plain message with %q", res.code, res.stdout, res.stderr, c.msg)
			}
		})
	}

	// nothing else reached the subscribers
	opsPublish(t, srv.AdminURL("/sse/hubs/default/publish"), "topic=cli&data=last")
	if f := s.EventT(t, opsWait); f.Data != "last" {
		t.Fatalf("an unexpected event: %q", f.Data)
	}
}
