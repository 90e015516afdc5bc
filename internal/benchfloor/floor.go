// Package benchfloor is Caddy's floor for an idle event stream, the
// baseline of the benchmarks: http.handlers.sse_floor (Caddyfile
// directive sse_floor) sets the headers of an event stream, flushes them
// and holds the request until the client leaves. It does nothing else, so
// that the memory and CPU a server spends on it are what Caddy itself
// costs per stream. It is compiled into cmd/caddy only with the build tag
// ssebench.
package benchfloor

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Floor{})
	httpcaddyfile.RegisterHandlerDirective("sse_floor", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("sse_floor", httpcaddyfile.After, "encode")
}

// Floor holds every request open as an event stream that never sends an
// event. It has no options.
type Floor struct{}

// CaddyModule returns the Caddy module information.
func (Floor) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_floor",
		New: func() caddy.Module { return new(Floor) },
	}
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (Floor) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache, no-transform")
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return nil
	}
	<-r.Context().Done()
	return nil
}

// parseCaddyfile sets up the handler from Caddyfile tokens:
//
//	sse_floor [<matcher>]
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	if h.NextBlock(0) {
		return nil, h.Err("sse_floor takes no options")
	}
	return Floor{}, nil
}

// Interface guard
var _ caddyhttp.MiddlewareHandler = Floor{}
