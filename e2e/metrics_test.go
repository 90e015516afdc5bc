package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

const metricsGlobal = `sse {
		hub ops {
			history 100
		}
		hub slow {
			history 50
		}
	}`

// metricsSite has a hub "ops" behind two sse routes, the first with room
// for maxSubscribers, a hub "slow" with a small history and delivery
// window, and the metrics handler.
func metricsSite(maxSubscribers int) string {
	return fmt.Sprintf(`sse /ops/events {
		hub ops
		max_subscribers %d
	}
	sse /ops/also {
		hub ops
	}
	sse_publish /ops/publish {
		hub ops
	}
	sse /slow/events {
		hub slow
		buffer 64KiB
	}
	sse_publish /slow/publish {
		hub slow
		max_size 10MiB
	}
	metrics /metrics`, maxSubscribers)
}

// TestMetricsAfterKnownTrafficAndReload drives known traffic through two
// hubs (connections, publishes, a client leaving, a resumption, a capacity
// refusal, a slow client dropped) and checks that Caddy's admin /metrics
// and the metrics handler show exactly the resulting figures; then reloads
// a changed config that keeps the hubs and checks that the counters go on
// and the subscriber gauge follows the streams of the new config.
func TestMetricsAfterKnownTrafficAndReload(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2400, 8400, metricsGlobal, metricsSite(3))
	adminMetrics, siteMetrics := srv.AdminURL("/metrics"), srv.base+"/metrics"
	ops := opsHubWant{disconnects: map[string]int{}}
	slow := opsHubWant{disconnects: map[string]int{}}
	check := func(t *testing.T) {
		t.Helper()
		want := opsMerge(ops.series("ops"), slow.series("slow"), opsHubWant{}.series("default"))
		opsWaitMetrics(t, adminMetrics, want)
		opsWaitMetrics(t, siteMetrics, want)
	}
	check(t)

	_, types := opsScrape(t, adminMetrics)
	for name, typ := range map[string]string{
		"caddy_sse_subscribers": "gauge", "caddy_sse_connections_total": "counter",
		"caddy_sse_events_published_total": "counter", "caddy_sse_events_delivered_total": "counter",
		"caddy_sse_events_replayed_total": "counter", "caddy_sse_disconnects_total": "counter",
		"caddy_sse_history_events": "gauge", "caddy_sse_history_bytes": "gauge",
		"caddy_sse_transport_up": "gauge",
	} {
		if types[name] != typ {
			t.Errorf("%s has type %q, want %s", name, types[name], typ)
		}
	}

	// three subscribers, then a fourth is refused for capacity
	client := ssetest.NewClient()
	streams := make([]*ssetest.Stream, 3)
	for i := range streams {
		streams[i] = ssetest.OpenT(t, client, srv.base+"/ops/events?topic=a", nil)
	}
	ops.connections, ops.subscribers = 3, 3
	refused := ssetest.OpenT(t, client, srv.base+"/ops/events?topic=a", nil)
	frames, err := refused.ReadAll(opsWait)
	if err != nil || len(frames) != 2 || frames[0].Kind != ssetest.KindRetry || !strings.Contains(frames[1].Comment, "subscriber limit") {
		t.Fatalf("the refused stream: %+v, %v", frames, err)
	}
	ops.disconnects["capacity"] = 1
	check(t)

	// five events reach the three subscribers
	var ids []string
	for i := range 5 {
		data := fmt.Sprintf("event-%d", i)
		p := opsPublish(t, srv.base+"/ops/publish", "topic=a&data="+data)
		if p.Subscribers != 3 {
			t.Fatalf("published to %d subscribers, want 3", p.Subscribers)
		}
		ids = append(ids, p.ID)
		ops.historyBytes += opsEventSize(p.ID, "a", data)
	}
	for _, s := range streams {
		for _, id := range ids {
			if f := s.EventT(t, opsWait); f.LastID != id {
				t.Fatalf("got event %s, want %s", f.LastID, id)
			}
		}
	}
	ops.published, ops.delivered, ops.historyEvents = 5, 15, 5
	check(t)

	// one client leaves; another resumes after the first event, through
	// the hub's other route: both routes count in the same series
	streams[2].Close()
	ops.subscribers--
	ops.disconnects["client"] = 1
	check(t)
	resumed := ssetest.OpenT(t, client, srv.base+"/ops/also?topic=a", http.Header{"Last-Event-ID": {ids[0]}})
	for _, id := range ids[1:] {
		if f := resumed.EventT(t, opsWait); f.LastID != id {
			t.Fatalf("replayed %s, want %s", f.LastID, id)
		}
	}
	streams[2] = resumed
	ops.connections++
	ops.subscribers++
	ops.replayed = 4
	check(t)

	// a subscriber that does not read is dropped as slow
	slowIDs, slowRead := dropSlowSubscriber(t, srv)
	slow.connections, slow.published = 1, len(slowIDs)
	slow.disconnects["slow"] = 1
	// the drop cuts the pending write: what was written before it counts
	// as delivered (live, or from the history once the client was behind
	// the delivery window), and the client read that and perhaps part of
	// the cut write (at most one round of 128 KiB)
	series, _ := opsScrape(t, adminMetrics)
	delivered := int(series[`caddy_sse_events_delivered_total{hub="slow"}`])
	replayed := int(series[`caddy_sse_events_replayed_total{hub="slow"}`])
	if delivered+replayed > slowRead || delivered+replayed < slowRead-20 {
		t.Fatalf("%d events delivered and %d replayed to the slow client, which read %d", delivered, replayed, slowRead)
	}
	slow.delivered, slow.replayed = delivered, replayed
	first := max(0, len(slowIDs)-50) // history 50
	slow.historyEvents = len(slowIDs) - first
	for i := first; i < len(slowIDs); i++ {
		slow.historyBytes += opsEventSize(slowIDs[i], "s", slowPayload(i))
	}
	check(t)
	if !strings.Contains(srv.Log(), "disconnected slow subscribers") {
		t.Error("no warning about the slow subscriber in the log")
	}

	// a reload that keeps both hubs: the old config's streams end, the
	// counters go on, and the gauge counts the new config's streams
	srv.reload(t, metricsGlobal, metricsSite(4))
	for _, s := range streams {
		opsReadToEnd(t, s)
	}
	ops.disconnects["shutdown"] = 3
	ops.subscribers = 0
	check(t)
	for range 2 {
		ssetest.OpenT(t, client, srv.base+"/ops/events?topic=a", nil)
	}
	p := opsPublish(t, srv.base+"/ops/publish", "topic=a&data=after-reload")
	if p.Subscribers != 2 {
		t.Fatalf("published to %d subscribers after the reload, want 2", p.Subscribers)
	}
	ops.connections += 2
	ops.subscribers = 2
	ops.published++
	ops.delivered += 2
	ops.historyEvents++
	ops.historyBytes += opsEventSize(p.ID, "a", "after-reload")
	check(t)
}

// slowData makes the slow hub's events 8 KiB.
var slowData = strings.Repeat("x", 8<<10)

// slowPayload returns the data of the i-th event published to the slow hub.
func slowPayload(i int) string {
	return fmt.Sprintf("%d %s", i, slowData)
}

// dropSlowSubscriber subscribes to the slow hub with a client that does
// not read, publishes 8 KiB events, 4 per request, until the subscriber
// is dropped (what it had yet to be sent left the history and the
// delivery window), then reads
// what was written to it until its stream ends. It returns the ids
// published and the number of events the client read.
func dropSlowSubscriber(t *testing.T, srv *opsServer) ([]string, int) {
	t.Helper()
	s := ssetest.OpenT(t, ssetest.NewSmallBufferClient(4096), srv.base+"/slow/events?topic=s", nil)
	var ids []string
	for dropped := false; !dropped; {
		if len(ids) > 8000 {
			t.Fatalf("the slow subscriber was never dropped after %d events", len(ids))
		}
		var body strings.Builder
		body.WriteString("[")
		for i := range 4 {
			if i > 0 {
				body.WriteString(",")
			}
			fmt.Fprintf(&body, `{"topic":"s","data":%q}`, slowPayload(len(ids)+i))
		}
		body.WriteString("]")
		r := opsDo(t, http.MethodPost, srv.base+"/slow/publish", "application/json", body.String())
		if r.status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.status, r.body)
		}
		var results []opsPublished
		opsDecode(t, r.body, &results)
		for _, res := range results {
			ids = append(ids, res.ID)
			dropped = dropped || res.Subscribers == 0
		}
	}
	return ids, len(opsReadToCut(t, s))
}
