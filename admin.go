package caddysse

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(AdminAPI))
}

// adminMaxSize is the largest body of a publish through the admin API.
const adminMaxSize = DefaultMaxSize

// AdminAPI is the admin.api.sse module: endpoints under /sse/ on Caddy's
// admin API, which looks after its own access control (by default it
// listens on localhost only and checks Host and Origin).
//
//	GET  /sse/hubs                 every hub of the running config and its figures
//	GET  /sse/hubs/<name>          one hub
//	POST /sse/hubs/<name>/publish     publish, with the bodies and answers of sse_publish
//	POST /sse/hubs/<name>/disconnect  end streams, by topic pattern or subject, on every node
//
// It has no configuration. Hubs are looked up in the running config at
// each request, so that the endpoints follow config reloads.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (*AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sse",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision registers the hub metrics in the new config's registry: the
// admin server, and its /metrics, are replaced before the config's apps
// are provisioned.
func (*AdminAPI) Provision(ctx caddy.Context) error {
	return registerMetrics(ctx.GetMetricsRegistry())
}

// Routes implements caddy.AdminRouter.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/sse/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// serve routes a request under /sse/. Every answer, refusals included,
// is JSON, {"error": "..."} for an error. Refusals of a request (4xx) are
// answered here, as sse_publish answers them; a failure of the server
// (5xx) is returned as a caddy.APIError, which Caddy's admin server logs,
// with its cause, and answers.
func (*AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/sse/"), "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "hubs":
		serveHubList(w, r)
	case len(parts) == 2 && parts[0] == "hubs":
		serveHubStats(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "hubs" && parts[2] == "publish":
		return serveAdminPublish(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "hubs" && parts[2] == "disconnect":
		return serveDisconnect(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "hubs" && parts[2] == "topics":
		serveHubTopics(w, r, parts[1])
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no admin endpoint %s; there are GET /sse/hubs, GET /sse/hubs/<name>, GET /sse/hubs/<name>/topics, POST /sse/hubs/<name>/publish and POST /sse/hubs/<name>/disconnect", r.URL.Path))
	}
	return nil
}

// serveHubList answers the figures of every hub, by name.
func serveHubList(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	list := make(map[string]HubStats)
	if app := runningApp(); app != nil {
		for name, hub := range app.hubs {
			list[name] = hub.Stats()
		}
	}
	writeJSON(w, http.StatusOK, list)
}

// serveHubStats answers the figures of one hub.
func serveHubStats(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	hub, ok := findRunningHub(w, name)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, hub.Stats())
}

// serveAdminPublish publishes to a hub exactly as an sse_publish route
// without topic templates does.
func serveAdminPublish(w http.ResponseWriter, r *http.Request, name string) error {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return nil
	}
	app := runningApp()
	hub, ok := appHub(w, app, name)
	if !ok {
		return nil
	}
	return adminPublish(w, r, hub, &app.adminStreams)
}

// adminPublish publishes a request to hub. It answers refusals itself and
// returns a failure of the server as a caddy.APIError, for Caddy's admin
// server to log and answer.
//
// A streaming publish is refused with its figures, which a caddy.APIError
// cannot carry: its failures are logged here, and answered.
func adminPublish(w http.ResponseWriter, r *http.Request, hub *Hub, streams *publishStreams) error {
	e := servePublish(w, r, hub, publishOptions{maxSize: adminMaxSize, streamTimeout: DefaultStreamTimeout, streams: streams})
	switch {
	case e == nil:
		return nil
	case e.cause != nil && e.figures == nil:
		return caddy.APIError{HTTPStatus: e.status, Err: e.cause, Message: e.msg}
	case e.cause != nil:
		caddy.Log().Named("admin.api.sse").Error("streaming publish failed", zap.String("hub", hub.Name()),
			zap.Int("status", e.status), zap.Int("events_before", e.figures.count), zap.Error(e.cause))
	}
	writeRefusal(w, e)
	return nil
}

// Interface guards
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
