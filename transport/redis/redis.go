// Package redis implements sse.transports.redis: every Caddy instance
// that names the same Redis, prefix and hub shares that hub. Redis holds
// the hub's id sequence and history, updated by Lua scripts that also
// publish each event on its topic's Pub/Sub channel (an event of several
// topics is stored once and published once, on the hub's channel of such
// events, which every instance follows); each instance reads the channels
// of the topics its subscribers follow over one connection, so that it
// delivers the hub's events in the order the scripts gave them. The hubs
// of an instance that name the same Redis share one client (clients.go)
// and that connection (pubsub.go).
package redis

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
)

func init() {
	caddy.RegisterModule(new(Transport))
	goredis.SetLogger(redisLog{})
}

// redisLog sends go-redis's own messages (reconnections, pool
// housekeeping) to Caddy's log at debug level, instead of plain lines on
// stderr: the transport logs what matters to operators itself.
type redisLog struct{}

// Printf implements go-redis's logger.
func (redisLog) Printf(_ context.Context, format string, v ...any) {
	l := caddy.Log().Named("sse.redis")
	if ce := l.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, v...)))
	}
}

// Defaults of the options.
const (
	DefaultPrefix  = "caddy-sse"
	DefaultTimeout = 2 * time.Second
)

// Transport keeps a hub's history in Redis and carries its events between
// the Caddy instances that share it. Values may use {env.*} and {file.*}
// placeholders, expanded when the config is loaded.
type Transport struct {
	// URL of the Redis server: redis://[user:pass@]host:port/db,
	// rediss://... (TLS) or unix:///path. Instead of address. Or a Redis
	// behind Sentinel:
	// redis+sentinel://[user:pass@]host:port[,host:port...]/<master>[/db]
	// (rediss+sentinel://... with TLS), the addresses being the
	// sentinels'; user and password are the Redis server's.
	URL string `json:"url,omitempty"`

	// Addresses (host:port) of the Redis server. Several addresses mean a
	// Redis Cluster (its nodes), never several standalone servers.
	// Default: 127.0.0.1:6379 when url and sentinel are not set either.
	Addresses []string `json:"addresses,omitempty"`

	// Sentinel, when set, finds the Redis server through Redis Sentinel,
	// and follows its failovers. Not with url or addresses.
	Sentinel *SentinelConfig `json:"sentinel,omitempty"`

	// Username for Redis ACL authentication.
	Username string `json:"username,omitempty"`

	// Password for Redis authentication.
	Password string `json:"password,omitempty"`

	// Database number (not with a Cluster).
	DB int `json:"db,omitempty"`

	// TLS, when set, connects over TLS.
	TLS *TLSConfig `json:"tls,omitempty"`

	// Prefix of the hub's keys and channels. Default: caddy-sse. Instances
	// share a hub when they name the same Redis, prefix and hub.
	Prefix string `json:"prefix,omitempty"`

	// Timeout of dialling and of every command; a publish that Redis does
	// not acknowledge within it is answered with 503. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	opts    *goredis.UniversalOptions
	timeout time.Duration
	logger  *zap.Logger

	shared      *sharedClient // the node's client for these options (clients.go)
	key         string        // clientKey of opts
	releaseOnce sync.Once     // releaseClient
	releaseErr  error

	client  goredis.UniversalClient // shared.client
	node    string                  // this transport's random id, in its control messages
	hub     string
	base    string   // "{<prefix>:<hub>}", the hash tag of every key
	keys    []string // the meta key, KEYS[1] of every script
	sink    transport.Sink
	limits  atomic.Pointer[transport.Limits]
	sharded atomic.Int32 // Pub/Sub flavour: 0 unknown, 1 sharded (Redis 7+), 2 classic

	rd            reader
	pres          presence    // who is there (presence.go)
	janitorWanted atomic.Bool // the trim script is to run at the janitor's next wake (see janitor)
	waits         deliveryWaits
	batch         batcher
	cached        atomic.Pointer[transport.Stats] // the last figures read
	costEstimate  atomic.Int64                    // the history's cost to Redis, as last read (see sizing.go)
	cand          atomic.Pointer[string]          // the epoch a script starts if the hub has none

	retryAfter  time.Duration // first wait before reconnecting; 0: 50 ms (tests set more)
	patternScan int           // topics a pattern replay looks at; 0: patternScanLimit (tests set less)

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	sinkMu sync.RWMutex // held for reading while Disconnect calls the sink; Close waits for it
}

// SentinelConfig names a Redis server monitored by Redis Sentinel.
type SentinelConfig struct {
	// Master is the name the sentinels monitor the server under.
	Master string `json:"master,omitempty"`

	// Addresses (host:port) of the sentinels; one is enough, more are
	// tried in turn.
	Addresses []string `json:"addresses,omitempty"`

	// Username and Password of the sentinels, if they require them (the
	// transport's username and password are the Redis server's).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// TLSConfig configures TLS to Redis.
type TLSConfig struct {
	// CA is a PEM file of the certificate authorities to trust instead of
	// the system's.
	CA string `json:"ca,omitempty"`

	// ServerName to verify the server's certificate against; default: the
	// host connected to.
	ServerName string `json:"server_name,omitempty"`

	// InsecureSkipVerify turns off the verification of the server's
	// certificate. For tests only.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sse.transports.redis",
		New: func() caddy.Module { return new(Transport) },
	}
}

// Provision expands placeholders and checks the options; it does not
// connect (Open does).
func (t *Transport) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	expand := func(name string, s *string) error {
		v, err := repl.ReplaceOrErr(*s, true, true)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*s = v
		return nil
	}
	if err := expand("url", &t.URL); err != nil {
		return err
	}
	for i := range t.Addresses {
		if err := expand("address", &t.Addresses[i]); err != nil {
			return err
		}
	}
	for name, s := range map[string]*string{"username": &t.Username, "password": &t.Password, "prefix": &t.Prefix} {
		if err := expand(name, s); err != nil {
			return err
		}
	}
	if sc := t.Sentinel; sc != nil {
		for name, s := range map[string]*string{"sentinel master": &sc.Master, "sentinel username": &sc.Username, "sentinel password": &sc.Password} {
			if err := expand(name, s); err != nil {
				return err
			}
		}
		for i := range sc.Addresses {
			if err := expand("sentinel address", &sc.Addresses[i]); err != nil {
				return err
			}
		}
	}
	if t.TLS != nil {
		if err := expand("tls ca", &t.TLS.CA); err != nil {
			return err
		}
		if err := expand("tls server_name", &t.TLS.ServerName); err != nil {
			return err
		}
	}
	opts, err := t.options()
	if err != nil {
		return err
	}
	t.opts = opts
	return nil
}

// options builds the go-redis options from the config, defaults applied.
func (t *Transport) options() (*goredis.UniversalOptions, error) {
	if t.Prefix == "" {
		t.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(t.Prefix, "{}\r\n ") {
		return nil, fmt.Errorf("prefix %q: braces, spaces and line breaks are not allowed", t.Prefix)
	}
	t.timeout = time.Duration(t.Timeout)
	switch {
	case t.timeout < 0:
		return nil, fmt.Errorf("timeout must not be negative")
	case t.timeout == 0:
		t.timeout = DefaultTimeout
	}
	if t.DB < 0 {
		return nil, fmt.Errorf("db must not be negative")
	}
	opts := &goredis.UniversalOptions{}
	switch {
	case t.URL != "" && len(t.Addresses) > 0:
		return nil, fmt.Errorf("url and address are exclusive")
	case t.Sentinel != nil && (t.URL != "" || len(t.Addresses) > 0):
		return nil, fmt.Errorf("sentinel excludes url and address (the sentinels' addresses go in the sentinel block)")
	case t.Sentinel != nil:
		sc := t.Sentinel
		if sc.Master == "" {
			return nil, fmt.Errorf("sentinel: master (the name the sentinels monitor) is required")
		}
		if len(sc.Addresses) == 0 {
			return nil, fmt.Errorf("sentinel: at least one sentinel address is required")
		}
		for _, a := range sc.Addresses {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("sentinel address %q: %w", a, err)
			}
		}
		opts.Addrs, opts.MasterName = sc.Addresses, sc.Master
		opts.SentinelUsername, opts.SentinelPassword = sc.Username, sc.Password
	case isSentinelURL(t.URL):
		if err := parseSentinelURL(t.URL, opts); err != nil {
			return nil, err
		}
	case t.URL != "":
		o, err := goredis.ParseURL(t.URL)
		if err != nil {
			return nil, fmt.Errorf("url: %w", err)
		}
		opts.Addrs = []string{o.Addr}
		if o.Network == "unix" {
			opts.Dialer = func(ctx context.Context, _, addr string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", addr)
			}
		}
		opts.Username, opts.Password, opts.DB = o.Username, o.Password, o.DB
		opts.TLSConfig = o.TLSConfig
	case len(t.Addresses) > 0:
		for _, a := range t.Addresses {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("address %q: %w", a, err)
			}
		}
		opts.Addrs = t.Addresses
	default:
		opts.Addrs = []string{"127.0.0.1:6379"}
	}
	if len(opts.Addrs) > 1 && opts.MasterName == "" && t.DB != 0 {
		return nil, fmt.Errorf("db cannot be used with a Redis Cluster (several addresses mean a Cluster)")
	}
	if t.Username != "" {
		opts.Username = t.Username
	}
	if t.Password != "" {
		opts.Password = t.Password
	}
	if t.DB != 0 {
		opts.DB = t.DB
	}
	if t.TLS != nil {
		tc, err := t.TLS.config()
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tc
	}
	opts.DialTimeout = t.timeout
	opts.ReadTimeout = t.timeout
	opts.WriteTimeout = t.timeout
	opts.ContextTimeoutEnabled = true
	opts.DialerRetries = 1
	// No automatic retries: a publish whose answer was lost may have been
	// stored, and must not be stored again (publishers retry with an
	// Idempotency-Key instead). With a Cluster, no redirects either: a
	// command is sent once; the next one goes where the slot moved.
	opts.MaxRetries = -1
	opts.MaxRedirects = -1
	opts.ClientName = "caddy-sse" // caddy-sse:<id> per shared client (clients.go)
	// No hand-offs of connections behind the reader's back: it must see
	// every reconnection to re-read what it missed.
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	var ca string
	if t.TLS != nil {
		ca = t.TLS.CA
	}
	t.key = clientKey(opts, ca)
	return opts, nil
}

func (tc *TLSConfig) config() (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         tc.ServerName,
		InsecureSkipVerify: tc.InsecureSkipVerify, //nolint:gosec // the user asked for it
	}
	if tc.CA != "" {
		pem, err := os.ReadFile(tc.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate found", tc.CA)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// Open implements transport.Transport: it connects to Redis, with the
// client the node's hubs share for these options (clients.go), and starts
// reading the hub's events. When Redis cannot be reached, the hub opens
// all the same, unavailable, and the transport keeps trying; a Redis that
// answers but refuses what the hub needs (credentials, ACL rights, TLS,
// not a Cluster...) fails, naming the cause (startcheck.go).
func (t *Transport) Open(name string, limits transport.Limits, sink transport.Sink) error {
	if t.opts == nil { // not provisioned: tests, or a config without Caddy
		opts, err := t.options()
		if err != nil {
			return err
		}
		t.opts = opts
	}
	if t.logger == nil {
		t.logger = zap.NewNop()
	}
	t.node = rand.Text()
	t.hub = name
	t.base = "{" + t.Prefix + ":" + name + "}"
	t.keys = []string{t.base + ":meta"}
	t.sink = sink
	t.limits.Store(&limits)
	t.shared = acquireClient(t.key, t.opts)
	t.shared.setBudget(t, limits)
	t.client = t.shared.client
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.rd.init(t)
	t.initPresence()
	t.waits.init()

	ctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	defer cancel()
	if err := t.startCheck(ctx); err != nil {
		t.closed.Store(true)
		t.cancel()
		t.releaseClient()
		return err
	}
	t.wg.Add(3)
	go t.rd.run()
	go t.janitor()
	go t.presenceWorker()
	// Wait a little for the Pub/Sub connection, so that a hub that can
	// serve does from the start.
	t.rd.awaitUp(ctx)
	if err := t.readerRefused(); err != nil {
		t.closed.Store(true)
		t.cancel()
		t.rd.close()
		t.wg.Wait()
		t.releaseClient()
		return err
	}
	return nil
}

// hello checks the connection: the server's version (to pick sharded
// Pub/Sub on Redis 7 and later) and its eviction policy.
func (t *Transport) hello(ctx context.Context) error {
	if t.sharded.Load() != 0 {
		return nil
	}
	info, err := t.client.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	version := ""
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			version = v
		}
	}
	major := 0
	_, _ = fmt.Sscanf(version, "%d", &major)
	flavour := int32(2)
	if major >= 7 {
		flavour = 1
	}
	if t.sharded.CompareAndSwap(0, flavour) {
		t.checkEviction(ctx, version)
	}
	return nil
}

// checkEviction warns when Redis may evict the hub's keys.
func (t *Transport) checkEviction(ctx context.Context, version string) {
	policy, err := t.client.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil { // CONFIG may be disabled (managed Redis)
		t.logger.Debug("cannot read redis's maxmemory-policy", zap.Error(err))
		return
	}
	p := policy["maxmemory-policy"]
	t.logger.Info("connected to redis", zap.String("hub", t.hub), zap.String("address", t.address()),
		zap.String("version", version), zap.String("maxmemory_policy", p))
	if p != "" && p != "noeviction" {
		t.logger.Warn("redis may evict keys (maxmemory-policy is not noeviction): "+
			"an evicted key loses history or idempotency records, and can start a new epoch",
			zap.String("hub", t.hub), zap.String("maxmemory_policy", p))
	}
	t.checkMaxmemory(ctx)
}

// publishCommand is the command the scripts publish with.
func (t *Transport) publishCommand(ctx context.Context) (string, error) {
	if err := t.hello(ctx); err != nil {
		return "", unavailable(err)
	}
	if t.sharded.Load() == 1 {
		return "SPUBLISH", nil
	}
	return "PUBLISH", nil
}

// address names the Redis server in logs and figures.
func (t *Transport) address() string {
	return strings.Join(t.opts.Addrs, ",")
}

// channel is the Pub/Sub channel of topic.
func (t *Transport) channel(topic string) string {
	return t.base + ":c:" + topic
}

// topicOf is the topic of a channel, or "".
func (t *Transport) topicOf(channel string) string {
	topic, _ := strings.CutPrefix(channel, t.base+":c:")
	return topic
}

// withTimeout bounds ctx by the transport's timeout.
func (t *Transport) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.timeout)
}

// SetLimits implements transport.Transport: the new limits apply to the
// next publishes, and the history is trimmed to them at once.
func (t *Transport) SetLimits(limits transport.Limits) {
	t.limits.Store(&limits)
	t.shared.setBudget(t, limits)
	ctx, cancel := t.withTimeout(t.ctx)
	defer cancel()
	if err := t.trim(ctx, true); err != nil {
		t.logger.Warn("trimming the history to new limits; the janitor will go on", zap.Error(err))
	}
	t.wantJanitor() // its next run is due at another time under the new limits
}

// Close implements transport.Transport.
func (t *Transport) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	t.sinkMu.Lock() // wait for a Disconnect calling the sink
	t.sinkMu.Unlock()
	t.cancel()
	t.rd.close()
	t.wg.Wait()
	return t.releaseClient()
}

// unavailable wraps err, an error reaching Redis, as ErrUnavailable.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: redis: %w", transport.ErrUnavailable, err)
}

// isAuthError reports whether err is Redis refusing the credentials.
func isAuthError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "WRONGPASS") || strings.Contains(s, "NOAUTH") || strings.Contains(s, "NOPERM")
}

// redisError maps an error of a command: a script error is a bug,
// anything else (network, timeouts, LOADING, READONLY) unavailability.
func redisError(err error) error {
	if err == nil {
		return nil
	}
	var re goredis.Error
	if errors.As(err, &re) && strings.Contains(err.Error(), "ERR user_script") {
		return fmt.Errorf("redis script: %w", err)
	}
	return unavailable(err)
}

// Interface guards
var (
	_ transport.Transport = (*Transport)(nil)
	_ caddy.Provisioner   = (*Transport)(nil)
)
