//go:build linux

package main

import (
	"math"
	"time"
)

// serverReport is what the tool saw of the server process (--pid).
type serverReport struct {
	PID          int     `json:"pid"`
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	RSSPeakKiB   int64   `json:"rss_peak_kib,omitempty"`
	KiBPerSub    float64 `json:"kib_per_sub,omitempty"`
	CPUSeconds   float64 `json:"cpu_s"`
	CPUUtil      float64 `json:"cpu_util"`
	CPUPerDeliv  float64 `json:"cpu_us_per_delivery,omitempty"`
	CPUPerPub    float64 `json:"cpu_us_per_publish,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// toolReport is what the tool itself cost.
type toolReport struct {
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	KiBPerConn   float64 `json:"kib_per_conn,omitempty"`
	ConnectCPUus float64 `json:"cpu_us_per_connect,omitempty"`
	CPUSeconds   float64 `json:"cpu_s"`
	CPUUtil      float64 `json:"cpu_util"`
	CPUPerDeliv  float64 `json:"cpu_us_per_delivery,omitempty"`
	CPUPerPub    float64 `json:"cpu_us_per_publish,omitempty"`
	GOMAXPROCS   int     `json:"gomaxprocs"`
	Saturated    bool    `json:"saturated"`
	Reads        uint64  `json:"reads,omitempty"`
	EventsPerRd  float64 `json:"events_per_read,omitempty"`
}

// connectReport describes how the subscribers connected.
type connectReport struct {
	Proto       string         `json:"proto"`
	Reader      string         `json:"reader"`
	Subscribers int            `json:"subscribers"`
	Connected   int64          `json:"connected"`
	Failed      int64          `json:"failed"`
	Failures    map[string]int `json:"failures,omitempty"`
	Retries     int64          `json:"connect_retries,omitempty"`
	ConnectS    float64        `json:"connect_s"`
}

// idleReport is the summary of the idle mode.
type idleReport struct {
	Mode  string `json:"mode"`
	Label string `json:"label,omitempty"`
	connectReport
	HoldS      float64       `json:"hold_s"`
	Dropped    int64         `json:"dropped"`
	Heartbeats uint64        `json:"heartbeats"`
	Events     uint64        `json:"events"`
	Server     *serverReport `json:"server,omitempty"`
	Tool       toolReport    `json:"tool"`
}

// stepReport is the summary of one measured run of publishing to
// subscribers.
type stepReport struct {
	Rate           float64        `json:"rate"`
	DurationS      float64        `json:"duration_s"`
	Subscribed     int            `json:"subscribed"`
	Published      uint64         `json:"published"`
	PublishErrors  uint64         `json:"publish_errors"`
	PublishError   string         `json:"publish_error,omitempty"`
	PublishRate    float64        `json:"publish_rate"`
	PublishersUsed int            `json:"publishers_used"`
	Late           uint64         `json:"schedule_late"`
	Behind         bool           `json:"behind"`
	LagMS          latencySummary `json:"schedule_lag_ms"`
	tally
	Stale          uint64         `json:"stale"`
	Foreign        uint64         `json:"foreign"`
	DeliveriesPerS float64        `json:"deliveries_per_s"`
	ElapsedS       float64        `json:"elapsed_s"`
	DrainS         float64        `json:"drain_s"`
	LatencyMS      latencySummary `json:"latency_ms"`
	ReadLatencyMS  latencySummary `json:"read_latency_ms"`
	PubLatencyMS   latencySummary `json:"publish_latency_ms"`
	OK             bool           `json:"ok"`
	Why            string         `json:"why,omitempty"`
	Server         *serverReport  `json:"server,omitempty"`
	Tool           toolReport     `json:"tool"`
}

// fanoutReport is the summary of the fanout mode.
type fanoutReport struct {
	Mode   string `json:"mode"`
	Label  string `json:"label,omitempty"`
	Stream bool   `json:"stream,omitempty"`
	connectReport
	Topics     int `json:"topics"`
	Size       int `json:"size"`
	Publishers int `json:"publishers"`
	stepReport
}

// searchReport is the summary of the search mode.
type searchReport struct {
	Mode   string `json:"mode"`
	Label  string `json:"label,omitempty"`
	Stream bool   `json:"stream,omitempty"`
	connectReport
	Topics     int          `json:"topics"`
	Size       int          `json:"size"`
	Publishers int          `json:"publishers"`
	MaxRateOK  float64      `json:"max_rate_ok"`
	MaxDelivOK float64      `json:"max_deliveries_per_s_ok"`
	StoppedBy  string       `json:"stopped_by"`
	Steps      []stepReport `json:"steps"`
}

// publishReport is the summary of the publish mode.
type publishReport struct {
	Mode         string            `json:"mode"`
	Label        string            `json:"label,omitempty"`
	Stream       bool              `json:"stream,omitempty"`
	Publishers   int               `json:"publishers"`
	Topics       int               `json:"topics"`
	Size         int               `json:"size"`
	DurationS    float64           `json:"duration_s"`
	Published    uint64            `json:"published"`
	Errors       uint64            `json:"errors"`
	Error        string            `json:"error,omitempty"`
	Statuses     map[string]uint64 `json:"statuses"`
	PublishesPer float64           `json:"publishes_per_s"`
	LatencyMS    latencySummary    `json:"latency_ms"`
	Server       *serverReport     `json:"server,omitempty"`
	Tool         toolReport        `json:"tool"`
}

// burstReport is the summary of the burst mode.
type burstReport struct {
	Mode   string `json:"mode"`
	Label  string `json:"label,omitempty"`
	Stream bool   `json:"stream,omitempty"`
	connectReport
	Topics          int            `json:"topics"`
	Size            int            `json:"size"`
	Events          int            `json:"events"`
	Batch           int            `json:"batch,omitempty"`
	Publishers      int            `json:"publishers"`
	PublishersUsed  int            `json:"publishers_used"`
	Subscribed      int            `json:"subscribed"`
	Published       uint64         `json:"published"`
	PublishRequests int            `json:"publish_requests"`
	PublishErrors   uint64         `json:"publish_errors"`
	PublishError    string         `json:"publish_error,omitempty"`
	PublishMS       float64        `json:"publish_ms"`
	PubLatencyMS    latencySummary `json:"publish_latency_ms"`
	Complete        int            `json:"complete"`
	tally
	ReceivedPerSub       countSummary   `json:"received_per_sub"`
	DisconnectedReceived countSummary   `json:"disconnected_received"`
	Stale                uint64         `json:"stale"`
	Foreign              uint64         `json:"foreign"`
	DeliverMS            float64        `json:"deliver_ms"`
	TimedOut             bool           `json:"timed_out"`
	DeliveriesPerS       float64        `json:"deliveries_per_s"`
	StreamBytes          uint64         `json:"stream_bytes"`
	MiBPerS              float64        `json:"stream_mib_per_s"`
	LatencyMS            latencySummary `json:"latency_ms"`
	ReadLatencyMS        latencySummary `json:"read_latency_ms"`
	OK                   bool           `json:"ok"`
	Why                  string         `json:"why,omitempty"`
	Server               *serverReport  `json:"server,omitempty"`
	Tool                 toolReport     `json:"tool"`
}

// seconds returns d in seconds, rounded to milliseconds.
func seconds(d time.Duration) float64 { return round(d.Seconds(), 3) }

// round rounds x to n decimals.
func round(x float64, n int) float64 {
	p := math.Pow(10, float64(n))
	return math.Round(x*p) / p
}

// per returns a/b, or 0 when b is 0.
func per(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
