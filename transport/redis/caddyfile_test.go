package redis

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"redis {\n bogus 1\n}", "unrecognized redis transport option 'bogus'"},
		{"redis a b", "wrong argument count"},
		{"redis {\n db -1\n}", "not a database number"},
		{"redis {\n db x\n}", "not a database number"},
		{"redis {\n timeout 0s\n}", "not a positive duration"},
		{"redis {\n timeout soon\n}", "not a positive duration"},
		{"redis {\n address\n}", "wrong argument count"},
		{"redis {\n prefix a b\n}", "wrong argument count"},
		{"redis {\n tls x\n}", "wrong argument count"},
		{"redis {\n tls {\n bogus\n }\n}", "unrecognized tls option 'bogus'"},
		{"redis {\n tls {\n insecure_skip_verify yes\n }\n}", "wrong argument count"},
	} {
		tr := new(Transport)
		err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestProvisionPlaceholders: {env.*} and {file.*} are expanded when the
// config is loaded, so that secrets stay out of it.
func TestProvisionPlaceholders(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSE_TEST_REDIS_HOST", "redis.internal")
	tr := new(Transport)
	in := "redis {\n address {env.SSE_TEST_REDIS_HOST}:6380\n username u\n password {file." + secret + "}\n prefix p\n timeout 1500ms\n tls {\n server_name {env.SSE_TEST_REDIS_HOST}\n insecure_skip_verify\n }\n}"
	if err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	if err := tr.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	o := tr.opts
	if len(o.Addrs) != 1 || o.Addrs[0] != "redis.internal:6380" || o.Username != "u" || o.Password != "s3cret" {
		t.Fatalf("options: addrs %v user %q password %q", o.Addrs, o.Username, o.Password)
	}
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.internal" || !o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("tls %+v", o.TLSConfig)
	}
	if o.ReadTimeout != 1500*time.Millisecond || o.DialTimeout != 1500*time.Millisecond || o.MaxRetries != -1 {
		t.Fatalf("timeouts %v %v, retries %d", o.ReadTimeout, o.DialTimeout, o.MaxRetries)
	}
	// a url, with its own credentials and database
	tr = &Transport{URL: "rediss://a:b@h:1/3"}
	if err := tr.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if o := tr.opts; o.Addrs[0] != "h:1" || o.Username != "a" || o.Password != "b" || o.DB != 3 || o.TLSConfig == nil {
		t.Fatalf("url options %+v", o)
	}
	// an unknown placeholder is an error, not an empty password
	tr = &Transport{Password: "{env.SSE_TEST_UNSET_VARIABLE_X}x{bogus.placeholder}"}
	if err := tr.Provision(ctx); err == nil {
		t.Fatal("an unknown placeholder was accepted")
	}
}
