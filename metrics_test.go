package caddysse

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestRegisterMetrics: the hub metrics register in a registry any number
// of times (the sse app and the admin API of each config both do), gather
// cleanly in a pedantic registry like Caddy's, and refuse to share their
// names with another collector.
func TestRegisterMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for range 2 {
		if err := registerMetrics(reg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if err := registerMetrics(nil); err != nil {
		t.Fatal(err)
	}
	other := prometheus.NewPedanticRegistry()
	if err := other.Register(newMetricsCollector()); err != nil {
		t.Fatal(err)
	}
	if err := registerMetrics(other); err == nil {
		t.Fatal("registered next to another collector of the same metrics")
	}
}
