package redis

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// A node's hubs that name the same Redis with the same options share one
// go-redis client: one pool of connections (and the sentinels' or the
// Cluster's bookkeeping), however many hubs, and one Pub/Sub connection
// that their readers share (pubsub.go; on a Cluster, one per hub).
//
// The clients are counted: Caddy provisions a new config before it cleans
// up the old one, so on a reload the new config's hubs take the clients
// the old ones still hold, and nothing reconnects; a client closes when
// its last hub does.

// sharedClient is one go-redis client and the hubs that use it.
type sharedClient struct {
	key    string
	name   string // CLIENT SETNAME of its connections: caddy-sse:<id>
	client goredis.UniversalClient
	refs   int
	muxes  map[muxKey]*mux        // its Pub/Sub connections, guarded by clients' lock
	needs  map[*Transport]hubNeed // what its hubs need of Redis (sizing.go), guarded by clients' lock
}

var clients = struct {
	sync.Mutex
	m map[string]*sharedClient
}{m: make(map[string]*sharedClient)}

// clientKey identifies the connection options of opts; cfg is what the
// options were built from that they do not show (the file of a CA).
func clientKey(opts *goredis.UniversalOptions, cfg any) string {
	k := struct {
		Addrs                      []string
		Master                     string
		Unix                       bool
		User, Pass                 string
		SentinelUser, SentinelPass string
		DB                         int
		TLS                        bool
		ServerName                 string
		Insecure                   bool
		Timeout                    int64
		Cfg                        any
	}{
		Addrs: opts.Addrs, Master: opts.MasterName, Unix: opts.Dialer != nil,
		User: opts.Username, Pass: opts.Password,
		SentinelUser: opts.SentinelUsername, SentinelPass: opts.SentinelPassword,
		DB: opts.DB, TLS: opts.TLSConfig != nil, Timeout: int64(opts.ReadTimeout), Cfg: cfg,
	}
	if opts.TLSConfig != nil {
		k.ServerName, k.Insecure = opts.TLSConfig.ServerName, opts.TLSConfig.InsecureSkipVerify
	}
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b) // the key holds no password
	return string(sum[:])
}

// acquireClient returns the client of key, made from opts if the node has
// none yet, and counts one more user of it.
func acquireClient(key string, opts *goredis.UniversalOptions) *sharedClient {
	clients.Lock()
	defer clients.Unlock()
	if c := clients.m[key]; c != nil {
		c.refs++
		return c
	}
	o := *opts
	o.ClientName = "caddy-sse:" + rand.Text()[:10]
	c := &sharedClient{key: key, name: o.ClientName, client: goredis.NewUniversalClient(&o), refs: 1}
	clients.m[key] = c
	return c
}

// release counts one user less, and closes the client after the last.
func (c *sharedClient) release() error {
	clients.Lock()
	c.refs--
	last := c.refs == 0
	if last {
		delete(clients.m, c.key)
	}
	clients.Unlock()
	if last {
		return c.client.Close()
	}
	return nil
}

// releaseClient gives the transport's client back, once.
func (t *Transport) releaseClient() error {
	t.releaseOnce.Do(func() {
		t.shared.dropBudget(t)
		t.releaseErr = t.shared.release()
	})
	return t.releaseErr
}

// clientName is the name this node's connections give Redis (CLIENT LIST).
func (t *Transport) clientName() string { return t.shared.name }
