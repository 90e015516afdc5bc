package caddysse

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/ssehub/caddy-sse/internal/caddyargs"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sse", parseSSE)
	httpcaddyfile.RegisterDirectiveOrder("sse", httpcaddyfile.After, "encode")
	httpcaddyfile.RegisterHandlerDirective("sse_publish", parsePublish)
	httpcaddyfile.RegisterDirectiveOrder("sse_publish", httpcaddyfile.After, "encode")
	httpcaddyfile.RegisterGlobalOption("sse", parseGlobalOption)
}

func parseSSE(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Subscribe)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

func parsePublish(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Publish)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	sse [<matcher>] {
//		hub             <name>
//		topic           <template>...
//		heartbeat       <duration>|off
//		retry           <duration>
//		max_age         <duration>
//		buffer          <size>|<events>
//		write_timeout   <duration>
//		replay          <events>
//		replay_latest   <events per topic>
//		max_topics      <n>
//		patterns
//		max_subscribers <n>
//		cors_origins    <origin>...
//		reset_event     <name>|off
//		hijack
//		send_buffer     <size>|off
//		allow           <pattern>...
//		token {
//			key      <secret|{env.*}|{file.*}|PEM public key>
//			jwks     <url>
//			alg      <HS256|RS256|ES256|EdDSA|...>
//			issuer   <iss>
//			audience <aud>
//			query    <name>
//			cookie   <name>
//		}
//		max_streams_per  <placeholder> <n>
//		expired_event    <name>|off
//		disconnect_event <name>|off
//		presence         <placeholder>
//	}
func (h *Subscribe) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "hub":
			h.Hub, err = hubArg(d)
		case "topic":
			h.Topics, err = someArgs(d, h.Topics)
		case "heartbeat":
			h.Heartbeat, err = durationOrOff(d)
		case "retry":
			h.Retry, err = positiveDuration(d)
		case "max_age":
			h.MaxAge, err = positiveDuration(d)
		case "buffer":
			h.BufferSize, h.Buffer, err = bufferArg(d)
		case "write_timeout":
			h.WriteTimeout, err = positiveDuration(d)
		case "replay":
			h.Replay, err = intArg(d, 0)
		case "replay_latest":
			h.ReplayLatest, err = intArg(d, 1)
		case "patterns":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Patterns = true
		case "max_topics":
			h.MaxTopics, err = intArg(d, 1)
		case "max_subscribers":
			h.MaxSubscribers, err = intArg(d, 0)
		case "cors_origins":
			h.CORSOrigins, err = originArgs(d, h.CORSOrigins)
		case "reset_event":
			h.ResetEvent, err = eventTypeArg(d)
		case "hijack":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Hijack = true
		case "send_buffer":
			h.SendBuffer, err = sizeOrOff(d)
		case "allow":
			h.Allow, err = someArgs(d, h.Allow)
		case "token":
			h.Token, err = tokenBlock(d, h.Token)
		case "max_streams_per":
			h.MaxStreamsPer, err = streamsPerArgs(d)
		case "expired_event":
			h.ExpiredEvent, err = eventTypeArg(d)
		case "disconnect_event":
			h.DisconnectEvent, err = eventTypeArg(d)
		case "presence":
			h.Presence, err = presenceArg(d)
		default:
			return d.Errf("unrecognized sse option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	sse_publish [<matcher>] {
//		hub            <name>
//		topic          <template>...
//		max_size       <size>
//		stream_timeout <duration>
//		max_streams    <n>
//		cors_origins   <origin>...
//		allow          <pattern>...
//		token          { ... }
//	}
func (p *Publish) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "hub":
			p.Hub, err = hubArg(d)
		case "topic":
			p.Topics, err = someArgs(d, p.Topics)
		case "max_size":
			p.MaxSize, err = sizeArg(d)
		case "stream_timeout":
			p.StreamTimeout, err = positiveDuration(d)
		case "max_streams":
			p.MaxStreams, err = intArg(d, 1)
		case "cors_origins":
			p.CORSOrigins, err = originArgs(d, p.CORSOrigins)
		case "allow":
			p.Allow, err = someArgs(d, p.Allow)
		case "token":
			p.Token, err = tokenBlock(d, p.Token)
		default:
			return d.Errf("unrecognized sse_publish option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseGlobalOption sets up the sse app from the global option:
//
//	sse {
//		hub <name> {
//			history               <events>
//			history_ttl           <duration>
//			history_max_bytes     <size>
//			idempotency_max_bytes <size>
//			presence_grace        <duration>
//			presence_max          <members>
//			transport             <name> [{ ... }]
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if prev, ok := existing.(httpcaddyfile.App); ok {
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, err
		}
	}
	if app.Hubs == nil {
		app.Hubs = make(map[string]*HubConfig)
	}
	d.Next() // option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		if d.Val() != "hub" {
			return nil, d.Errf("unrecognized sse global option '%s'", d.Val())
		}
		name, err := hubArg(d)
		if err != nil {
			return nil, err
		}
		if app.Hubs[name] != nil {
			return nil, d.Errf("hub %q is declared twice", name)
		}
		hc := new(HubConfig)
		if err := hc.unmarshalCaddyfile(d); err != nil {
			return nil, err
		}
		app.Hubs[name] = hc
	}
	return httpcaddyfile.App{Name: "sse", Value: caddyconfig.JSON(app, nil)}, nil
}

func (hc *HubConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "history":
			var n int
			n, err = intArg(d, 0)
			hc.History = &n
		case "history_ttl":
			hc.HistoryTTL, err = positiveDuration(d)
		case "history_max_bytes":
			hc.HistoryMaxBytes, err = sizeArg(d)
		case "idempotency_max_bytes":
			hc.IdempotencyMaxBytes, err = sizeArg(d)
		case "presence_grace":
			hc.PresenceGrace, err = positiveDuration(d)
		case "presence_max":
			hc.PresenceMax, err = intArg(d, 1)
		case "transport":
			err = hc.unmarshalTransport(d)
		default:
			return d.Errf("unrecognized hub option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (hc *HubConfig) unmarshalTransport(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	if hc.TransportRaw != nil {
		return d.Err("transport already specified")
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, "sse.transports."+name)
	if err != nil {
		return err
	}
	hc.TransportRaw = caddyconfig.JSONModuleObject(unm, "transport", name, nil)
	return nil
}

// eventTypeArg reads the event type of an option, or off.
func eventTypeArg(d *caddyfile.Dispenser) (string, error) {
	opt := d.Val()
	typ, err := caddyargs.One(d)
	if err != nil {
		return "", err
	}
	if err := validateEventType(typ); err != nil {
		return "", d.Errf("%s: %v", opt, err)
	}
	return typ, nil
}

// tokenBlock reads a token block:
//
//	token {
//		key      <secret|{env.*}|{file.*}|PEM public key>
//		jwks     <url>
//		alg      <alg>
//		issuer   <iss>
//		audience <aud>
//		query    <name>
//		cookie   <name>
//	}
func tokenBlock(d *caddyfile.Dispenser, prev *TokenConfig) (*TokenConfig, error) {
	if prev != nil {
		return nil, d.Err("token already specified")
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	tc := new(TokenConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "key":
			tc.Keys, err = someArgs(d, tc.Keys)
		case "jwks":
			tc.JWKS, err = caddyargs.One(d)
		case "alg":
			tc.Alg, err = caddyargs.One(d)
		case "issuer":
			tc.Issuer, err = caddyargs.One(d)
		case "audience":
			tc.Audience, err = caddyargs.One(d)
		case "query":
			tc.Query, err = caddyargs.One(d)
		case "cookie":
			tc.Cookie, err = caddyargs.One(d)
		default:
			return nil, d.Errf("unrecognized token option '%s'", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case tc.Alg == "":
		return nil, d.Err("token: alg is required (HS256, RS256, ES256, EdDSA, ...): tokens of another algorithm are refused")
	case len(tc.Keys) == 0 && tc.JWKS == "":
		return nil, d.Err("token: give a key (repeatable) or a jwks URL")
	case len(tc.Keys) > 0 && tc.JWKS != "":
		return nil, d.Err("token: give keys or a jwks URL, not both")
	}
	return tc, nil
}

// streamsPerArgs reads max_streams_per <placeholder> <n>.
func streamsPerArgs(d *caddyfile.Dispenser) (*StreamsPer, error) {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return nil, d.ArgErr()
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return nil, d.Errf("max_streams_per: %q is not a number of streams", args[1])
	}
	sp := &StreamsPer{Key: args[0], Max: n}
	if err := sp.validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return sp, nil
}

// presenceArg reads the placeholder of presence.
func presenceArg(d *caddyfile.Dispenser) (string, error) {
	key, err := caddyargs.One(d)
	if err != nil {
		return "", err
	}
	if err := validatePresence(key); err != nil {
		return "", d.Err(err.Error())
	}
	return key, nil
}

// someArgs appends one or more arguments to list.
func someArgs(d *caddyfile.Dispenser, list []string) ([]string, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.ArgErr()
	}
	return append(list, args...), nil
}

// hubArg reads a hub name.
func hubArg(d *caddyfile.Dispenser) (string, error) {
	name, err := caddyargs.One(d)
	if err != nil {
		return "", err
	}
	if !hubNameRE.MatchString(name) {
		return "", d.Errf("hub %q: a hub name has 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	return name, nil
}

// originArgs appends one or more CORS origins to list.
func originArgs(d *caddyfile.Dispenser, list []string) ([]string, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.ArgErr()
	}
	if err := validateOrigins(args); err != nil {
		return nil, d.Errf("cors_origins: %v", err)
	}
	return append(list, args...), nil
}

// intArg reads the integer of an option; it must be at least min.
func intArg(d *caddyfile.Dispenser, min int) (int, error) {
	opt := d.Val()
	s, err := caddyargs.One(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min {
		return 0, d.Errf("%s: %q is not an integer of at least %d", opt, s, min)
	}
	return n, nil
}

// sizeArg reads the size of an option, such as 64MiB.
func sizeArg(d *caddyfile.Dispenser) (int64, error) {
	opt := d.Val()
	s, err := caddyargs.One(d)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<62 {
		return 0, d.Errf("%s: %q is not a positive size, such as 512KiB or 64MiB", opt, s)
	}
	return int64(n), nil
}

// bufferArg reads the buffer of an sse route: a size in wire bytes (such
// as 1MiB), or a bare number, which keeps its version 1 meaning, a number
// of events.
func bufferArg(d *caddyfile.Dispenser) (size int64, events int, err error) {
	if !d.NextArg() {
		return 0, 0, d.ArgErr()
	}
	s := d.Val()
	if d.NextArg() {
		return 0, 0, d.ArgErr()
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 {
			return 0, 0, d.Errf("buffer: %q is not a positive size, such as 256KiB or 1MiB, nor a positive number of events", s)
		}
		return 0, n, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<62 {
		return 0, 0, d.Errf("buffer: %q is not a positive size, such as 256KiB or 1MiB, nor a positive number of events", s)
	}
	return int64(n), 0, nil
}

// positiveDuration reads the duration of an option: greater than zero.
func positiveDuration(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	s, err := caddyargs.One(d)
	if err != nil {
		return 0, err
	}
	return parsePositiveDuration(d, opt, s, "")
}

// parsePositiveDuration parses the duration s of the option opt; orElse
// names what else the option accepts, for the error.
func parsePositiveDuration(d *caddyfile.Dispenser, opt, s, orElse string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(s)
	if err == nil && dur > 0 {
		return caddy.Duration(dur), nil
	}
	if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
		return 0, d.Errf("%s: %q has no unit: write e.g. 15s%s", opt, s, orElse)
	}
	return 0, d.Errf("%s: %q is not a positive duration, such as 15s, 2m or 1h%s", opt, s, orElse)
}

// sizeOrOff reads the size of an option, or off (-1).
func sizeOrOff(d *caddyfile.Dispenser) (int64, error) {
	opt := d.Val()
	s, err := caddyargs.One(d)
	if err != nil {
		return 0, err
	}
	if s == "off" {
		return -1, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<62 {
		return 0, d.Errf("%s: %q is not a positive size, such as 256KiB, or off", opt, s)
	}
	return int64(n), nil
}

// durationOrOff reads the duration of an option, or "off" (negative).
func durationOrOff(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	s, err := caddyargs.One(d)
	if err != nil {
		return 0, err
	}
	if s == "off" {
		return caddy.Duration(-time.Second), nil
	}
	return parsePositiveDuration(d, opt, s, ", or off")
}
