package caddysse

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// hubMetrics is the one collector of the hubs' metrics. It is registered
// in the metrics registry of every config (Caddy makes a new registry for
// each), and reads the hubs' own counters at scrape time: as hubs survive
// reloads, so do their counts, and nothing is counted twice however many
// handlers name a hub.
var hubMetrics = newMetricsCollector()

// metricsCollector reports the hubs of the running config to Prometheus.
// Counting costs the delivery path nothing but atomic additions; the
// figures are gathered only when /metrics is scraped.
type metricsCollector struct {
	subscribers   *prometheus.Desc
	connections   *prometheus.Desc
	published     *prometheus.Desc
	delivered     *prometheus.Desc
	replayed      *prometheus.Desc
	disconnects   *prometheus.Desc
	refusals      *prometheus.Desc
	historyEvents *prometheus.Desc
	historyBytes  *prometheus.Desc
	keyBytes      *prometheus.Desc
	transportUp   *prometheus.Desc
	resyncs       *prometheus.Desc
}

func newMetricsCollector() *metricsCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("caddy", "sse", name), help, labels, nil)
	}
	return &metricsCollector{
		subscribers:   desc("subscribers", "Subscribers connected to the hub on this node.", "hub"),
		connections:   desc("connections_total", "Event streams opened (subscriptions refused for capacity are not counted).", "hub"),
		published:     desc("events_published_total", "Events published to the hub through this node.", "hub"),
		delivered:     desc("events_delivered_total", "Live events written to subscribers on this node.", "hub"),
		replayed:      desc("events_replayed_total", "Events written to subscribers from the hub's history (resumption and replay).", "hub"),
		disconnects:   desc("disconnects_total", "Event streams ended, by reason: client, slow, max_age, shutdown, resync, expired, revoked, per_subject; capacity and unavailable count refused subscriptions.", "hub", "reason"),
		refusals:      desc("refusals_total", "Subscriptions and publishes refused by access control, by reason: unauthorized, forbidden, expired.", "hub", "reason"),
		historyEvents: desc("history_events", "Events retained in the hub's history.", "hub"),
		historyBytes:  desc("history_bytes", "Size on the wire of the events retained in the hub's history.", "hub"),
		keyBytes:      desc("idempotency_bytes", "Bytes the hub's Idempotency-Key records cost, within idempotency_max_bytes.", "hub"),
		transportUp:   desc("transport_up", "Whether the hub's transport can publish and subscribe now (1) or not (0).", "hub"),
		resyncs:       desc("transport_resyncs_total", "Times the hub's transport re-read the history or ended streams, by reason: reconnect, gap, epoch.", "hub", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.subscribers, c.connections, c.published, c.delivered,
		c.replayed, c.disconnects, c.refusals, c.historyEvents, c.historyBytes,
		c.keyBytes, c.transportUp, c.resyncs,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reports every hub of the
// running config.
func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	app := runningApp()
	if app == nil {
		return
	}
	for name, hub := range app.hubs {
		c.collectHub(ch, name, hub.Stats())
	}
}

func (c *metricsCollector) collectHub(ch chan<- prometheus.Metric, name string, st HubStats) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name)
	}
	gauge(c.subscribers, float64(st.Subscribers))
	counter(c.connections, st.Connections)
	counter(c.published, st.Published)
	counter(c.delivered, st.Delivered)
	counter(c.replayed, st.Replayed)
	for reason, n := range st.Disconnects {
		ch <- prometheus.MustNewConstMetric(c.disconnects, prometheus.CounterValue, float64(n), name, reason)
	}
	for reason, n := range st.Refusals {
		ch <- prometheus.MustNewConstMetric(c.refusals, prometheus.CounterValue, float64(n), name, reason)
	}
	gauge(c.historyEvents, float64(st.History.Events))
	gauge(c.historyBytes, float64(st.History.Bytes))
	gauge(c.keyBytes, float64(st.History.Idempotency.Bytes))
	up := 0.0
	if st.TransportState.Up {
		up = 1
	}
	gauge(c.transportUp, up)
	for reason, n := range st.TransportState.Resyncs {
		ch <- prometheus.MustNewConstMetric(c.resyncs, prometheus.CounterValue, float64(n), name, reason)
	}
}

// registerMetrics registers the hub metrics in a config's registry; the
// collector being there already is fine.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(hubMetrics)
	var are prometheus.AlreadyRegisteredError
	if err == nil || errors.As(err, &are) && are.ExistingCollector == hubMetrics {
		return nil
	}
	return fmt.Errorf("registering the sse metrics: %w", err)
}

// Interface guards
var _ prometheus.Collector = (*metricsCollector)(nil)
