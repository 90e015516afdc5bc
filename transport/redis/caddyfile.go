package redis

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/ssehub/caddy-sse/internal/caddyargs"
)

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens:
//
//	transport redis [<url>] {
//		url       <redis://[user:pass@]host:port/db | rediss://... | unix://...
//		           | redis+sentinel://[user:pass@]host:port[,host:port...]/<master>[/db]>
//		address   <host:port>...   # several: the nodes of a Redis Cluster
//		sentinel  {
//			master   <name>
//			address  <host:port>...  # the sentinels
//			username <user>          # the sentinels' own, if they need one
//			password <password>
//		}
//		username  <user>
//		password  <password>
//		db        <n>
//		tls       [{
//			ca                   <file>
//			server_name          <name>
//			insecure_skip_verify
//		}]
//		prefix    <key prefix>
//		timeout   <duration>
//	}
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // transport name
	if d.NextArg() {
		t.URL = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "url":
			t.URL, err = caddyargs.One(d)
		case "address":
			t.Addresses = append(t.Addresses, d.RemainingArgs()...)
			if len(t.Addresses) == 0 {
				return d.ArgErr()
			}
		case "username":
			t.Username, err = caddyargs.One(d)
		case "password":
			t.Password, err = caddyargs.One(d)
		case "db":
			var s string
			if s, err = caddyargs.One(d); err == nil {
				if t.DB, err = strconv.Atoi(s); err != nil || t.DB < 0 {
					return d.Errf("db: %q is not a database number", s)
				}
			}
		case "tls":
			err = t.unmarshalTLS(d)
		case "sentinel":
			err = t.unmarshalSentinel(d)
		case "prefix":
			t.Prefix, err = caddyargs.One(d)
		case "timeout":
			var s string
			if s, err = caddyargs.One(d); err == nil {
				dur, perr := caddy.ParseDuration(s)
				if perr != nil || dur <= 0 {
					return d.Errf("timeout: %q is not a positive duration", s)
				}
				t.Timeout = caddy.Duration(dur)
			}
		default:
			return d.Errf("unrecognized redis transport option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *Transport) unmarshalTLS(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	t.TLS = new(TLSConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "ca":
			t.TLS.CA, err = caddyargs.One(d)
		case "server_name":
			t.TLS.ServerName, err = caddyargs.One(d)
		case "insecure_skip_verify":
			if d.NextArg() {
				return d.ArgErr()
			}
			t.TLS.InsecureSkipVerify = true
		default:
			return d.Errf("unrecognized tls option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *Transport) unmarshalSentinel(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	sc := new(SentinelConfig)
	t.Sentinel = sc
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "master":
			sc.Master, err = caddyargs.One(d)
		case "address":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			sc.Addresses = append(sc.Addresses, args...)
		case "username":
			sc.Username, err = caddyargs.One(d)
		case "password":
			sc.Password, err = caddyargs.One(d)
		default:
			return d.Errf("unrecognized sentinel option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if sc.Master == "" || len(sc.Addresses) == 0 {
		return d.Err("sentinel needs master <name> and address <host:port>...")
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Transport)(nil)
