//go:build linux

package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
)

// runPublish publishes as fast as c.publishers closed-loop workers can,
// each on its own keep-alive connection, for the duration.
func runPublish(ctx context.Context, c *config, pr *progress) (*publishReport, error) {
	pub, err := newPublisherFor(c)
	if err != nil {
		return nil, err
	}
	defer pub.close()
	if c.pubStream {
		return runPublishStreams(ctx, c, pub, pr)
	}
	// one publish per worker first, so that the connections are open
	// before the measured phase
	scratch := make([]pubScratch, c.publishers)
	for i := range scratch {
		defer scratch[i].close()
		if res := pub.publish(ctx, &scratch[i], 0, uint64(i), topicName(i%c.topics), since()); res.err != nil {
			return nil, fmt.Errorf("the first publish failed: %w", res.err)
		}
	}
	var (
		latency  histogram
		count    atomic.Uint64
		errs     atomic.Uint64
		firstErr atomic.Pointer[string]
		statusMu sync.Mutex
		statuses = make(map[int]uint64)
	)
	pr.printf("publishing with %d publishers for %s", c.publishers, c.duration)
	m := newMeter(c.pid, nil)
	end := since() + c.duration
	stop := pr.every(func() string { return fmt.Sprintf("%d published", count.Load()) })
	var wg sync.WaitGroup
	for w := range c.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := &scratch[w]
			mine := make(map[int]uint64)
			const maxPerWorker = 1 << 30
			for i := 0; i < maxPerWorker && since() < end && ctx.Err() == nil; i++ {
				seq := uint64(i*c.publishers + w)
				begin := since()
				res := pub.publish(ctx, sc, 0, seq, topicName(int(seq%uint64(c.topics))), begin)
				latency.record(since() - begin)
				count.Add(1)
				mine[res.status]++
				if res.err != nil {
					errs.Add(1)
					msg := res.err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
			statusMu.Lock()
			for k, v := range mine {
				statuses[k] += v
			}
			statusMu.Unlock()
		}()
	}
	wg.Wait()
	stop()
	ph := m.stop()
	n := count.Load()
	r := &publishReport{
		Mode:         "publish",
		Label:        c.label,
		Publishers:   c.publishers,
		Topics:       c.topics,
		Size:         c.size,
		DurationS:    seconds(ph.wall),
		Published:    n,
		Errors:       errs.Load(),
		Statuses:     make(map[string]uint64, len(statuses)),
		PublishesPer: round(per(float64(n-errs.Load()), ph.wall.Seconds()), 0),
		LatencyMS:    latency.summary(),
		Server:       ph.srv,
		Tool:         ph.tool,
	}
	for k, v := range statuses {
		name := strconv.Itoa(k)
		if k == 0 {
			name = "no answer"
		}
		r.Statuses[name] = v
	}
	if p := firstErr.Load(); p != nil {
		r.Error = *p
	}
	r.Tool.CPUPerPub = perItem(ph.selfCPU, n)
	if r.Server != nil && r.Server.Error == "" {
		r.Server.CPUPerPub = perItem(ph.srvCPU, n)
	}
	return r, ctx.Err()
}
