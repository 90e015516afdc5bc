package caddysse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
	_ "github.com/ssehub/caddy-sse/transport/memory" // the default transport
	_ "github.com/ssehub/caddy-sse/transport/redis"  // several instances share hubs
)

func init() {
	caddy.RegisterModule(new(App))
}

// hubs holds every open hub, keyed by name and transport config, so that a
// hub outlives a config reload that keeps both. It is the package's only
// mutable state.
var hubs = caddy.NewUsagePool()

// Defaults of a hub's history.
const (
	DefaultHubName         = "default"
	DefaultHistory         = 1000
	DefaultHistoryMaxBytes = 64 << 20
)

// hubNameRE is what a hub name may be; it appears in admin API paths.
var hubNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// App is the sse app: it declares the hubs that sse and sse_publish
// handlers name. A hub called "default" exists without being declared.
type App struct {
	// Hubs by name.
	Hubs map[string]*HubConfig `json:"hubs,omitempty"`

	hubs         map[string]*Hub
	kept         map[string]bool // hubs taken over from the running config
	keys         []string        // pool keys this app loaded
	adminStreams publishStreams  // streaming publishes through the admin API
	logger       *zap.Logger
	ctx          caddy.Context // of the config, to look at its http app once it has started
}

// HubConfig configures one hub: its history limits and its transport.
type HubConfig struct {
	// How many events the history keeps per topic, for resumption and
	// replay. Default: 1000. 0 keeps none.
	History *int `json:"history,omitempty"`

	// How long an event stays in the history. Default: 0, no age limit.
	HistoryTTL caddy.Duration `json:"history_ttl,omitempty"`

	// The most bytes the whole hub's history may hold, counted as the
	// events' size on the wire; the oldest events go first.
	// Default: 64 MiB.
	HistoryMaxBytes int64 `json:"history_max_bytes,omitempty"`

	// The most bytes the hub's Idempotency-Key records may hold together,
	// counted as they cost (the key, the request's fingerprint, the ids as
	// runs, the subscriber counts of its first 1,000 events, and what holds
	// them). When a new key would exceed it, the keys used first are
	// forgotten first, before their 24 hours: a request that repeats a
	// forgotten key publishes anew. Default: history_max_bytes / 8.
	IdempotencyMaxBytes int64 `json:"idempotency_max_bytes,omitempty"`

	// How long a member's leave is held back (SPEC section 11, presence):
	// when a member's last stream on a topic ends on this node, the
	// member stays present this long, and neither a leave nor a join is
	// sent if it has a stream there again by then, on any node (a
	// reconnection after max_age, a reload or a network blip). It is the
	// hub's, not a route's, so that every route and every node of the hub
	// agree: configure the same on every instance. Default: 5s.
	PresenceGrace caddy.Duration `json:"presence_grace,omitempty"`

	// The most members a presence event lists (the first in byte order);
	// its count stays exact. Default: 1000.
	PresenceMax int `json:"presence_max,omitempty"`

	// The transport that stores the history and carries events between
	// nodes. Default: memory (one process).
	TransportRaw json.RawMessage `json:"transport,omitempty" caddy:"namespace=sse.transports inline_key=transport"`
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sse",
		New: func() caddy.Module { return new(App) },
	}
}

// limits returns the history and idempotency limits hc asks for, defaults
// applied.
func (hc *HubConfig) limits() transport.Limits {
	l := transport.Limits{
		Events:   DefaultHistory,
		TTL:      time.Duration(hc.HistoryTTL),
		MaxBytes: hc.HistoryMaxBytes,
	}
	if hc.History != nil {
		l.Events = *hc.History
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = DefaultHistoryMaxBytes
	}
	l.IdempotencyMaxBytes = hc.IdempotencyMaxBytes
	if l.IdempotencyMaxBytes == 0 {
		l.IdempotencyMaxBytes = max(l.MaxBytes/8, 1)
	}
	return l
}

func (hc *HubConfig) validate() error {
	switch {
	case hc.History != nil && *hc.History < 0:
		return fmt.Errorf("history must not be negative")
	case hc.HistoryTTL < 0:
		return fmt.Errorf("history_ttl must not be negative")
	case hc.HistoryMaxBytes < 0:
		return fmt.Errorf("history_max_bytes must not be negative")
	case hc.IdempotencyMaxBytes < 0:
		return fmt.Errorf("idempotency_max_bytes must not be negative")
	case hc.PresenceGrace < 0:
		return fmt.Errorf("presence_grace must not be negative")
	case hc.PresenceMax < 0:
		return fmt.Errorf("presence_max must not be negative")
	}
	return nil
}

// presence returns the presence settings hc asks for (zero fields stand
// for the defaults).
func (hc *HubConfig) presence() PresenceSettings {
	return PresenceSettings{Grace: time.Duration(hc.PresenceGrace), Max: hc.PresenceMax}
}

// Provision opens the hubs, or takes over those of the running config
// that have the same name and transport.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.ctx = ctx
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if a.Hubs == nil {
		a.Hubs = make(map[string]*HubConfig)
	}
	if a.Hubs[DefaultHubName] == nil {
		a.Hubs[DefaultHubName] = new(HubConfig)
	}
	a.hubs = make(map[string]*Hub, len(a.Hubs))
	a.kept = make(map[string]bool, len(a.Hubs))
	for name, hc := range a.Hubs {
		if err := a.provisionHub(ctx, name, hc); err != nil {
			return fmt.Errorf("hub %q: %w", name, err)
		}
	}
	if err := onEvent(ctx, "started", eventHandler{"sse: apply the hubs' history limits", a.started}); err != nil {
		return err
	}
	return onEvent(ctx, "stopping", eventHandler{"sse: end the streaming publishes through the admin API", a.stopping})
}

// stopping ends the streaming publishes that came through the admin API
// while this config ran: Caddy's exit waits for the admin server's
// requests (10 seconds), and a reload leaves them on the old admin server.
// Their publishers get a 503 with the figures.
func (a *App) stopping() {
	if n := a.adminStreams.stop(); n > 0 {
		a.logger.Info("ended the streaming publishes through the admin API", zap.Int("streams", n))
	}
}

func (a *App) provisionHub(ctx caddy.Context, name string, hc *HubConfig) error {
	if !hubNameRE.MatchString(name) {
		return fmt.Errorf("a hub name has 1 to 64 letters, digits, '.', '_' or '-'")
	}
	if err := hc.validate(); err != nil {
		return err
	}
	if len(hc.TransportRaw) == 0 {
		hc.TransportRaw = json.RawMessage(`{"transport":"memory"}`)
	}
	key, err := poolKey(name, hc.TransportRaw)
	if err != nil {
		return err
	}
	val, loaded, err := hubs.LoadOrNew(key, func() (caddy.Destructor, error) {
		mod, err := ctx.LoadModule(hc, "TransportRaw")
		if err != nil {
			return nil, fmt.Errorf("loading transport: %w", err)
		}
		h, err := newHub(name, mod.(transport.Transport), hc.limits(), a.logger.With(zap.String("hub", name)))
		if err == nil {
			h.setPresence(hc.presence())
		}
		return h, err
	})
	if err != nil {
		return err
	}
	a.keys = append(a.keys, key)
	a.hubs[name] = val.(*Hub)
	a.kept[name] = loaded
	return nil
}

// poolKey identifies a hub by its name and canonical transport config.
func poolKey(name string, transportRaw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(transportRaw, &v); err != nil {
		return "", fmt.Errorf("decoding transport config: %w", err)
	}
	canonical, err := json.Marshal(v) // map keys come out sorted
	if err != nil {
		return "", fmt.Errorf("encoding transport config: %w", err)
	}
	return name + "\x00" + string(canonical), nil
}

// Start implements caddy.App. The history limits of hubs taken over from
// the running config are applied once the whole config has started (see
// started), so that a config that fails at any stage changes nothing.
func (*App) Start() error { return nil }

// started applies this config's history limits to its hubs and logs them,
// once every app of the config has started.
func (a *App) started() {
	for name, h := range a.hubs {
		limits := a.Hubs[name].limits()
		h.transport.SetLimits(limits)
		h.setPresence(a.Hubs[name].presence())
		how := "created"
		if a.kept[name] {
			how = "kept with its history"
		}
		a.logger.Info("hub ready", zap.String("hub", name), zap.String("transport", h.transportName),
			zap.Int("history", limits.Events), zap.Duration("history_ttl", limits.TTL),
			zap.Int64("history_max_bytes", limits.MaxBytes), zap.Int64("idempotency_max_bytes", limits.IdempotencyMaxBytes),
			zap.String("state", how))
	}
	a.adviseGracePeriod()
}

// adviseGracePeriod warns, once a config has started, when its HTTPS
// servers speak HTTP/3 and it has no grace_period: Caddy's HTTP/3 server,
// when it stops, waits for its clients to close their QUIC connections,
// which browsers do after 30 s idle, however promptly every stream ended.
// It is the one wait of a stop or a reload that no handler can cut short.
func (a *App) adviseGracePeriod() {
	appIface, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	app, ok := appIface.(*caddyhttp.App)
	if !ok || app.GracePeriod > 0 {
		return
	}
	for name, srv := range app.Servers {
		protocols := srv.Protocols
		if len(protocols) == 0 {
			protocols = []string{"h1", "h2", "h3"}
		}
		if len(srv.TLSConnPolicies) > 0 && slices.Contains(protocols, "h3") {
			a.logger.Warn("HTTP/3 is served and grace_period is not set: a stop or a reload waits for browsers to close their idle QUIC connections, about 30 s, after every stream has ended; set grace_period in the global options (e.g. grace_period 2s)",
				zap.String("server", name))
			return
		}
	}
}

// Stop implements caddy.App; streams are ended by their handlers.
func (*App) Stop() error { return nil }

// Cleanup releases the hubs this app loaded; a hub closes when no config
// uses it any more.
func (a *App) Cleanup() error {
	for _, key := range a.keys {
		if _, err := hubs.Delete(key); err != nil {
			a.logger.Error("closing hub", zap.Error(err))
		}
	}
	a.keys = nil
	return nil
}

// Hub returns the hub called name, or nil.
func (a *App) Hub(name string) *Hub {
	return a.hubs[name]
}

// runningApp returns the sse app of the running config, or nil when the
// running config has none. The admin API and the metrics outlive configs:
// they look hubs up through it each time they need them.
func runningApp() *App {
	app, err := caddy.ActiveContext().AppIfConfigured("sse")
	if err != nil {
		return nil
	}
	a, _ := app.(*App)
	return a
}

// lookupHub finds a hub declared in the sse app.
func lookupHub(ctx caddy.Context, name string) (*Hub, error) {
	appIface, err := ctx.App("sse")
	if err != nil {
		return nil, fmt.Errorf("loading sse app: %w", err)
	}
	hub := appIface.(*App).Hub(name)
	if hub == nil {
		return nil, fmt.Errorf("hub %q is not declared: declare it in the global options, as in { sse { hub %s } }", name, name)
	}
	return hub, nil
}

// onEvent calls h's function when Caddy emits the event called name for
// this config: "started" once all its apps have started, "stopping" when
// it stops, on reload or exit, before Caddy waits for open requests.
func onEvent(ctx caddy.Context, name string, h eventHandler) error {
	appIface, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading events app: %w", err)
	}
	if err := appIface.(*caddyevents.App).On(name, h); err != nil {
		return fmt.Errorf("subscribing to the %s event: %w", name, err)
	}
	return nil
}

// eventHandler adapts a function to caddyevents.Handler; Caddy's debug
// logs show it by its description.
type eventHandler struct {
	what string
	fn   func()
}

// Handle implements caddyevents.Handler.
func (h eventHandler) Handle(context.Context, caddy.Event) error {
	h.fn()
	return nil
}

// String describes the handler.
func (h eventHandler) String() string { return h.what }

// findRunningHub returns the hub called name in the running config, or
// answers 404.
func findRunningHub(w http.ResponseWriter, name string) (*Hub, bool) {
	return appHub(w, runningApp(), name)
}

// appHub returns the hub called name of app (nil: none), or answers 404.
func appHub(w http.ResponseWriter, app *App, name string) (*Hub, bool) {
	if app != nil {
		if hub := app.Hub(name); hub != nil {
			return hub, true
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no hub %q in the running config; GET /sse/hubs lists the hubs", name))
	return nil, false
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
