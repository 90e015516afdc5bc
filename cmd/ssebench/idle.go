//go:build linux

package main

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// openPool connects c.subscribers subscribers and describes how it went.
func openPool(ctx context.Context, c *config, pr *progress) (*subPool, connectReport, error) {
	tlsConf, err := tlsConfig(c.caFile, c.insecure)
	if err != nil {
		return nil, connectReport{}, err
	}
	var targets []*subTarget
	sources := c.sources
	for _, u := range strings.Split(c.subURL, ",") {
		target, err := newSubTarget(u, c.subHeaders, c.proto, tlsConf)
		if err != nil {
			return nil, connectReport{}, err
		}
		if ip := target.ip(); !ip.IsLoopback() {
			sources = 0 // loopback source addresses reach loopback only
		}
		targets = append(targets, target)
	}
	pool := newSubPool(targets, sources, c.bufSize, c.dialTimeout)
	if c.proto == protoH3 {
		if pool.quic, err = newQUICTransports(pool.sources); err != nil {
			return nil, connectReport{}, err
		}
		pool.quicConf = quicConfig(c.dialTimeout)
	}
	if c.reader == "epoll" {
		for range c.pollers {
			pl, err := newPoller(pollerBufSize)
			if err != nil {
				pool.close()
				return nil, connectReport{}, err
			}
			pool.pollers = append(pool.pollers, pl)
		}
	}
	start := since()
	pool.connect(ctx, c.subscribers, c.topics, c.concurrency, pr)
	cr := connectReport{
		Proto:       c.proto,
		Reader:      c.reader,
		Subscribers: c.subscribers,
		Connected:   pool.connected.Load(),
		Failed:      pool.failed.Load(),
		Failures:    pool.failureCounts(),
		Retries:     pool.retries.Load(),
		ConnectS:    seconds(since() - start),
	}
	pr.printf("connected %d/%d in %.2fs, %d failed%s", cr.Connected, c.subscribers, cr.ConnectS, cr.Failed, failureText(cr.Failures))
	if err := ctx.Err(); err != nil {
		pool.close()
		return nil, cr, err
	}
	return pool, cr, nil
}

// runIdle opens the subscribers, holds them for the duration and reports
// what they cost the server (and the tool).
func runIdle(ctx context.Context, c *config, pr *progress) (*idleReport, error) {
	debug.FreeOSMemory()
	before := newMeter(c.pid, nil)
	pool, cr, err := openPool(ctx, c, pr)
	if err != nil {
		return nil, err
	}
	connected := newMeter(c.pid, before)
	connectCPU := connected.self0.cpu - before.self0.cpu
	pr.printf("holding %d streams for %s", cr.Connected, c.duration)
	hold(ctx, c.duration, connected, pr, func() string {
		return fmt.Sprintf("holding: %d open, %d dropped", cr.Connected-pool.dropped.Load(), pool.dropped.Load())
	})
	// what the tool holds per stream, without the garbage of connecting
	debug.FreeOSMemory()
	ph := connected.stop()
	// the server's heap once its memory was read: the profile's GC would
	// change it
	if c.profileOut != "" {
		if err := fetchProfile(ctx, c.pprofURL, "heap?gc=1", c.profileOut+".heap.pb.gz", time.Minute).wait(); err != nil {
			pr.printf("the server's heap profile: %v", err)
		}
	}
	r := &idleReport{
		Mode:          "idle",
		Label:         c.label,
		connectReport: cr,
		HoldS:         seconds(ph.wall),
		Dropped:       pool.dropped.Load(),
		Server:        ph.srv,
		Tool:          ph.tool,
	}
	pool.close()
	r.Heartbeats = pool.heartbeats.Load()
	r.Events = pool.events.Load()
	n := float64(cr.Connected)
	r.Tool.KiBPerConn = round(per(float64(r.Tool.RSSAfterKiB-r.Tool.RSSBeforeKiB), n), 2)
	r.Tool.ConnectCPUus = round(per(float64(connectCPU.Microseconds()), n), 2)
	if r.Server != nil && r.Server.Error == "" {
		r.Server.KiBPerSub = round(per(float64(r.Server.RSSAfterKiB-r.Server.RSSBeforeKiB), n), 2)
	}
	return r, nil
}

// hold waits for d, sampling the server's memory every second.
func hold(ctx context.Context, d time.Duration, m *meter, pr *progress, status func() string) {
	end := since() + d
	for left := d; left > 0; left = end - since() {
		if !sleep(ctx, min(left, time.Second)) {
			return
		}
		m.peek()
		if end-since() > 0 {
			pr.printf("%s", status())
		}
	}
}

// failureText lists connection failures for the progress output.
func failureText(failures map[string]int) string {
	if len(failures) == 0 {
		return ""
	}
	var b strings.Builder
	for _, kind := range slices.Sorted(maps.Keys(failures)) {
		fmt.Fprintf(&b, "; %d: %s", failures[kind], kind)
	}
	return b.String()
}
