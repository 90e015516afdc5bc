package caddysse

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

func adapt(t *testing.T, caddyfile string) (string, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	return string(out), err
}

// TestCaddyfileAllOptions adapts a Caddyfile with every option to the
// JSON config in testdata.
func TestCaddyfileAllOptions(t *testing.T) {
	in, err := os.ReadFile("testdata/all-options.caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/all-options.json")
	if err != nil {
		t.Fatal(err)
	}
	caddytest.AssertAdapt(t, string(in), "caddyfile", strings.TrimSuffix(string(want), "\n"))
}

func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, config, want string
	}{
		{"unknown sse option", `:80 {
	sse {
		bogus 1
	}
}`, "unrecognized sse option 'bogus'"},
		{"unknown publish option", `:80 {
	sse_publish {
		bogus
	}
}`, "unrecognized sse_publish option 'bogus'"},
		{"buffer zero", `:80 {
	sse {
		buffer 0
	}
}`, "not a positive size"},
		{"buffer zero bytes", `:80 {
	sse {
		buffer 0KiB
	}
}`, "not a positive size"},
		{"buffer negative", `:80 {
	sse {
		buffer -5
	}
}`, "not a positive size"},
		{"buffer neither a size nor a number", `:80 {
	sse {
		buffer lots
	}
}`, "not a positive size, such as 256KiB or 1MiB, nor a positive number of events"},
		{"buffer with two values", `:80 {
	sse {
		buffer 1MiB 2MiB
	}
}`, "wrong argument count"},
		{"bad duration", `:80 {
	sse {
		retry soon
	}
}`, "not a positive duration"},
		{"negative retry", `:80 {
	sse {
		retry -1s
	}
}`, "not a positive duration"},
		{"heartbeat missing value", `:80 {
	sse {
		heartbeat
	}
}`, "wrong argument count"},
		{"bad size", `:80 {
	sse_publish {
		max_size big
	}
}`, "not a positive size"},
		{"send_buffer not a size", `:80 {
	sse {
		send_buffer lots
	}
}`, "send_buffer: \"lots\" is not a positive size, such as 256KiB, or off"},
		{"send_buffer without a value", `:80 {
	sse {
		send_buffer
	}
}`, "wrong argument count"},
		{"max_streams zero", `:80 {
	sse_publish {
		max_streams 0
	}
}`, "max_streams"},
		{"max_streams not a number", `:80 {
	sse_publish {
		max_streams many
	}
}`, "max_streams"},
		{"hub without name", `{
	sse {
		hub
	}
}`, "wrong argument count"},
		{"hub twice", `{
	sse {
		hub a
		hub a
	}
}`, "declared twice"},
		{"unknown hub option", `{
	sse {
		hub a {
			size 5
		}
	}
}`, "unrecognized hub option 'size'"},
		{"unknown transport", `{
	sse {
		hub a {
			transport carrier-pigeon
		}
	}
}`, "sse.transports.carrier-pigeon"},
		{"transport memory with options", `{
	sse {
		hub a {
			transport memory {
				x
			}
		}
	}
}`, "takes no options"},
		{"negative history", `{
	sse {
		hub a {
			history -1
		}
	}
}`, "at least 0"},
		{"sse with an argument", `:80 {
	sse /events extra
}`, "wrong argument count"},
		{"buffer 0 names the option", `:80 {
	sse {
		buffer 0
	}
}`, `buffer: "0" is not a positive size`},
		{"a duration without a unit", `:80 {
	sse {
		heartbeat 15
	}
}`, `heartbeat: "15" has no unit: write e.g. 15s, or off`},
		{"a bad write_timeout", `:80 {
	sse {
		write_timeout soon
	}
}`, `write_timeout: "soon" is not a positive duration`},
		{"a bad stream_timeout", `:80 {
	sse_publish {
		stream_timeout 0s
	}
}`, `stream_timeout: "0s" is not a positive duration`},
		{"a bad size names the option", `{
	sse {
		hub a {
			history_max_bytes lots
		}
	}
}`, `history_max_bytes: "lots" is not a positive size`},
		{"a bad idempotency_max_bytes", `{
	sse {
		hub a {
			idempotency_max_bytes lots
		}
	}
}`, `idempotency_max_bytes: "lots" is not a positive size, such as 512KiB or 64MiB`},
		{"idempotency_max_bytes zero", `{
	sse {
		hub a {
			idempotency_max_bytes 0
		}
	}
}`, `idempotency_max_bytes: "0" is not a positive size`},
		{"idempotency_max_bytes negative", `{
	sse {
		hub a {
			idempotency_max_bytes -1MiB
		}
	}
}`, `idempotency_max_bytes: "-1MiB" is not a positive size`},
		{"idempotency_max_bytes without a value", `{
	sse {
		hub a {
			idempotency_max_bytes
		}
	}
}`, "wrong argument count"},
		{"idempotency_max_bytes with two values", `{
	sse {
		hub a {
			idempotency_max_bytes 1MiB 2MiB
		}
	}
}`, "wrong argument count"},
		{"a bad hub name at parse time", `:80 {
	sse_publish {
		hub a/b
	}
}`, "a hub name has 1 to 64"},
		{"a bad origin at parse time", `:80 {
	sse {
		cors_origins example.com
	}
}`, "cors_origins: cors origin \"example.com\" is not of the form"},
		{"token without alg", `:80 {
	sse {
		token {
			key 0123456789abcdef0123456789abcdef
		}
	}
}`, "alg is required"},
		{"token without key", `:80 {
	sse {
		token {
			alg HS256
		}
	}
}`, "give a key"},
		{"token with key and jwks", `:80 {
	sse_publish {
		token {
			key 0123456789abcdef0123456789abcdef
			jwks https://id.example/jwks
			alg HS256
		}
	}
}`, "not both"},
		{"two tokens", `:80 {
	sse {
		token {
			key 0123456789abcdef0123456789abcdef
			alg HS256
		}
		token {
			key 0123456789abcdef0123456789abcdef
			alg HS256
		}
	}
}`, "token already specified"},
		{"unknown token option", `:80 {
	sse {
		token {
			secret x
		}
	}
}`, "unrecognized token option 'secret'"},
		{"token with an argument", `:80 {
	sse {
		token HS256
	}
}`, "wrong argument count"},
		{"allow without patterns", `:80 {
	sse {
		allow
	}
}`, "wrong argument count"},
		{"max_streams_per without a placeholder", `:80 {
	sse {
		max_streams_per user 3
	}
}`, "is not a placeholder"},
		{"max_streams_per zero", `:80 {
	sse {
		max_streams_per {http.sse.token.sub} 0
	}
}`, "at least 1"},
		{"max_streams_per not a number", `:80 {
	sse {
		max_streams_per {http.sse.token.sub} many
	}
}`, "not a number"},
		{"max_streams_per one argument", `:80 {
	sse {
		max_streams_per {http.sse.token.sub}
	}
}`, "wrong argument count"},
		{"a bad expired_event", `:80 {
	sse {
		expired_event "a
b"
	}
}`, "expired_event: event type"},
		{"a bad reset_event at parse time", `:80 {
	sse {
		reset_event "a
b"
	}
}`, "reset_event: event type"},
		{"patterns with an argument", `:80 {
	sse {
		patterns on
	}
}`, "wrong argument count"},
		{"replay_latest zero", `:80 {
	sse {
		replay_latest 0
	}
}`, `replay_latest: "0" is not an integer of at least 1`},
		{"replay_latest not a number", `:80 {
	sse {
		replay_latest many
	}
}`, "replay_latest: \"many\" is not an integer"},
		{"replay_latest without a value", `:80 {
	sse {
		replay_latest
	}
}`, "wrong argument count"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := adapt(t, c.config)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestProvisionErrors loads configs that adapt but do not provision: the
// load fails with a clear error.
func TestProvisionErrors(t *testing.T) {
	cases := []struct {
		name, config, want string
	}{
		{"undeclared hub", `:9080 {
	sse {
		hub nowhere
	}
}`, "is not declared: declare it in the global options, as in { sse { hub nowhere } }"},
		{"bad hub name", `:9080 {
	sse
}`, "a hub name has"},
		{"bad cors origin", `:9080 {
	sse {
		cors_origins example.com
	}
}`, "not of the form scheme://host"},
		{"token alg none", `:9080 {
	sse {
		token {
			key 0123456789abcdef0123456789abcdef
			alg none
		}
	}
}`, "token: "},
		{"token HMAC key too short", `:9080 {
	sse {
		token {
			key short
			alg HS256
		}
	}
}`, "token: "},
		{"token key file missing", `:9080 {
	sse_publish {
		token {
			key {file./nonexistent/sse.key}
			alg HS256
		}
	}
}`, "key 1 is empty once its placeholders are replaced"},
		{"token PEM key for HMAC", `:9080 {
	sse {
		token {
			key "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----"
			alg HS256
		}
	}
}`, "token: "},
		{"token Ed25519 key for RS256", `:9080 {
	sse {
		token {
			key "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----"
			alg RS256
		}
	}
}`, "token: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			global := fmt.Sprintf("{\n\tadmin localhost:%d\n}\n", testAdmin)
			if c.name == "bad hub name" {
				global = fmt.Sprintf("{\n\tadmin localhost:%d\n\tsse {\n\t\thub a/b\n\t}\n}\n", testAdmin)
			}
			config := strings.ReplaceAll(c.config, ":9080", fmt.Sprintf(":%d", testHTTP))
			caddytest.AssertLoadError(t, global+config, "caddyfile", c.want)
		})
	}
	jsonCases := []struct{ name, handler, want string }{
		{"reset event with a newline", `{"handler":"sse","reset_event":"a\nb"}`, "CR, LF or NUL"},
		{"negative buffer", `{"handler":"sse","buffer":-1}`, "buffer must not be negative"},
		{"negative buffer_size", `{"handler":"sse","buffer_size":-1}`, "buffer_size must not be negative"},
		{"negative max_size", `{"handler":"sse_publish","max_size":-1}`, "max_size must not be negative"},
		{"negative max_streams", `{"handler":"sse_publish","max_streams":-1}`, "max_streams must not be negative"},
		{"negative stream_timeout", `{"handler":"sse_publish","stream_timeout":-1}`, "stream_timeout must not be negative"},
		{"unknown field", `{"handler":"sse","topic":"x"}`, "unknown field"},
		{"max_streams_per without max", `{"handler":"sse","max_streams_per":{"key":"{http.sse.token.sub}"}}`, "at least 1"},
		{"a bad disconnect_event", `{"handler":"sse","disconnect_event":"a\nb"}`, "disconnect_event"},
		{"an empty allow pattern", `{"handler":"sse_publish","allow":[""]}`, "allow: topic is empty"},
		{"negative replay_latest", `{"handler":"sse","replay_latest":-1}`, "replay_latest must not be negative"},
	}
	for _, c := range jsonCases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"admin":{"listen":"localhost:%d"},"apps":{"http":{"servers":{"s":{"listen":[":%d"],"routes":[{"handle":[`,
				testAdmin, testHTTP) + c.handler + `]}]}}}}}`
			caddytest.AssertLoadError(t, cfg, "json", c.want)
		})
	}
	// a route with patterns or replay_latest on a hub whose transport
	// does not serve them is refused at load (subscribe.go); both built-in
	// transports serve them now: TestPatternsOverCaddyRedis loads such a
	// route on a Redis hub
	hubCases := []struct{ name, hub, want string }{
		{"negative history_max_bytes", `{"history_max_bytes":-1}`, "history_max_bytes must not be negative"},
		{"negative idempotency_max_bytes", `{"idempotency_max_bytes":-1}`, "idempotency_max_bytes must not be negative"},
	}
	for _, c := range hubCases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"admin":{"listen":"localhost:%d"},"apps":{"sse":{"hubs":{"a":%s}}}}`, testAdmin, c.hub)
			caddytest.AssertLoadError(t, cfg, "json", c.want)
		})
	}
}

// TestHubLimitsDefaults: a hub's idempotency budget defaults to an eighth
// of its history's bytes, whatever those are.
func TestHubLimitsDefaults(t *testing.T) {
	var hc HubConfig
	if l := hc.limits(); l.MaxBytes != DefaultHistoryMaxBytes || l.IdempotencyMaxBytes != DefaultHistoryMaxBytes/8 {
		t.Errorf("defaults: %+v", l)
	}
	hc = HubConfig{HistoryMaxBytes: 1 << 20}
	if l := hc.limits(); l.IdempotencyMaxBytes != 128<<10 {
		t.Errorf("history_max_bytes 1MiB: %+v", l)
	}
	hc = HubConfig{HistoryMaxBytes: 1 << 20, IdempotencyMaxBytes: 5 << 20}
	if l := hc.limits(); l.IdempotencyMaxBytes != 5<<20 || l.IdempotencyBudget() != 5<<20 {
		t.Errorf("idempotency_max_bytes 5MiB: %+v", l)
	}
}
