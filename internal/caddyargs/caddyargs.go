// Package caddyargs holds the Caddyfile argument readers that the sse
// handlers and the Redis transport share.
package caddyargs

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// One reads exactly one argument of the current directive or option.
func One(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}
