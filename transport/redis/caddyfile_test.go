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
	t.Parallel()
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
		{"redis {\n sentinel x\n}", "wrong argument count"},
		{"redis {\n sentinel {\n bogus\n }\n}", "unrecognized sentinel option 'bogus'"},
		{"redis {\n sentinel {\n master m\n }\n}", "needs master <name> and address"},
		{"redis {\n sentinel {\n address h:1\n }\n}", "needs master <name> and address"},
		{"redis {\n sentinel {\n master a b\n address h:1\n }\n}", "wrong argument count"},
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

// TestSentinelConfig: a sentinel block and a redis+sentinel:// url make
// the options of go-redis's failover client; what cannot work is refused.
func TestSentinelConfig(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	t.Setenv("SSE_TEST_SENTINEL_PASSWORD", "spw")
	tr := new(Transport)
	in := "redis {\n sentinel {\n master mymaster\n address s1:26379 s2:26379\n address s3:26379\n password {env.SSE_TEST_SENTINEL_PASSWORD}\n }\n password rpw\n db 2\n}"
	if err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if err := tr.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	o := tr.opts
	if o.MasterName != "mymaster" || strings.Join(o.Addrs, ",") != "s1:26379,s2:26379,s3:26379" ||
		o.SentinelPassword != "spw" || o.Password != "rpw" || o.DB != 2 {
		t.Fatalf("sentinel block options: %+v", o)
	}
	for _, tc := range []struct {
		url                       string
		addrs, master, user, pass string
		db                        int
		tls                       bool
	}{
		{"redis+sentinel://s1:26379/mymaster", "s1:26379", "mymaster", "", "", 0, false},
		{"redis+sentinel://u:p%40ss@s1:26379,s2:26380/m/3", "s1:26379,s2:26380", "m", "u", "p@ss", 3, false},
		{"rediss+sentinel://:pw@[::1]:26379/m/", "[::1]:26379", "m", "", "pw", 0, true},
	} {
		tr := &Transport{URL: tc.url}
		if err := tr.Provision(ctx); err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		o := tr.opts
		if strings.Join(o.Addrs, ",") != tc.addrs || o.MasterName != tc.master || o.Username != tc.user ||
			o.Password != tc.pass || o.DB != tc.db || (o.TLSConfig != nil) != tc.tls {
			t.Errorf("%s: options %+v", tc.url, o)
		}
	}
	for _, tc := range []struct {
		tr   *Transport
		want string
	}{
		{&Transport{URL: "redis+sentinel://s1:26379"}, "master's name is missing"},
		{&Transport{URL: "redis+sentinel://s1:26379/"}, "master's name is missing"},
		{&Transport{URL: "redis+sentinel://s1/m"}, "sentinel address"},
		{&Transport{URL: "redis+sentinel://s1:1/m/x"}, "not a database number"},
		{&Transport{URL: "redis+sentinel://s1:1/m?x=1"}, "no query"},
		{&Transport{Sentinel: &SentinelConfig{Master: "m"}}, "at least one sentinel address"},
		{&Transport{Sentinel: &SentinelConfig{Addresses: []string{"s:1"}}}, "master"},
		{&Transport{Sentinel: &SentinelConfig{Master: "m", Addresses: []string{"s:1"}}, Addresses: []string{"a:1"}}, "excludes url and address"},
		{&Transport{Addresses: []string{"a:1", "b:1"}, DB: 1}, "several addresses mean a Cluster"},
	} {
		if err := tc.tr.Provision(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.tr, err, tc.want)
		}
	}
}
