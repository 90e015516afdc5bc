package redis

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// Redis behind Sentinel: go-redis's failover client asks the sentinels
// for the master's address, connects to it, and follows the sentinels'
// +switch-master announcements: after a failover, the next commands and
// the node's next Pub/Sub connection (pubsub.go) go to the new master.

// isSentinelURL reports whether u is a redis+sentinel:// URL.
func isSentinelURL(u string) bool {
	return strings.HasPrefix(u, "redis+sentinel://") || strings.HasPrefix(u, "rediss+sentinel://")
}

// parseSentinelURL sets opts from
// redis[s]+sentinel://[user:pass@]host:port[,host:port...]/<master>[/db].
// The addresses are the sentinels'; user and password the Redis
// server's.
func parseSentinelURL(raw string, opts *goredis.UniversalOptions) error {
	scheme, rest, _ := strings.Cut(raw, "://")
	bad := func(why string) error {
		return fmt.Errorf("url: %s: want %s://[user:pass@]host:port[,host:port...]/<master>[/db]", why, scheme)
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return bad("no query or fragment allowed")
	}
	hosts, path, _ := strings.Cut(rest, "/")
	if at := strings.LastIndex(hosts, "@"); at >= 0 {
		user, pass, hasPass := strings.Cut(hosts[:at], ":")
		var err error
		if opts.Username, err = url.PathUnescape(user); err != nil {
			return bad("username")
		}
		if hasPass {
			if opts.Password, err = url.PathUnescape(pass); err != nil {
				return bad("password")
			}
		}
		hosts = hosts[at+1:]
	}
	for _, h := range strings.Split(hosts, ",") {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return bad(fmt.Sprintf("sentinel address %q: %v", h, err))
		}
		opts.Addrs = append(opts.Addrs, h)
	}
	master, db, hasDB := strings.Cut(strings.TrimSuffix(path, "/"), "/")
	if master == "" {
		return bad("the master's name is missing")
	}
	var err error
	if opts.MasterName, err = url.PathUnescape(master); err != nil {
		return bad("master name")
	}
	if hasDB {
		if opts.DB, err = strconv.Atoi(db); err != nil || opts.DB < 0 {
			return bad(fmt.Sprintf("%q is not a database number", db))
		}
	}
	if scheme == "rediss+sentinel" {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} // each server's name from its address
	}
	return nil
}
