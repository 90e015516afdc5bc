//go:build linux

package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The burst mode asks whether a burst is slowness to the hub: subscribers
// are connected, then --events events are published at once (JSON arrays
// of --batch events over --publishers closed-loop publishers, or
// streaming publishes), and the tool waits until every subscriber whose
// stream is still open has every event. Subscribers never reconnect: a
// stream that ends is disconnected, with what it had received by then.

// Defaults of the burst mode.
const (
	// defaultBatchTemplate is one event of an array published to our hub.
	defaultBatchTemplate = `{"topic":"{topic}","data":"{data}"}`
	// defaultBurstType is the content type of an array.
	defaultBurstType = "application/json"
	// defaultBurstGrace is the longest wait for the deliveries of a burst
	// after the last publish was answered.
	defaultBurstGrace = 30 * time.Second
	// burstPoll is how often the tool looks whether every subscriber has
	// the burst, and burstPeek how often it samples the server's memory
	// meanwhile.
	burstPoll = 5 * time.Millisecond
	burstPeek = 100 * time.Millisecond
)

// burstDefaults sets the defaults of the burst mode for the flags that
// were not given (set): a JSON body for the arrays, a grace of 30s, and
// one streaming publish with --pub-stream.
func (c *config) burstDefaults(set map[string]bool) {
	if !set["grace"] {
		c.grace = defaultBurstGrace
	}
	if c.pubStream {
		if !set["publishers"] {
			c.publishers = 1
		}
		return
	}
	if !set["pub-type"] {
		c.pubType = defaultBurstType
	}
}

// runBurst connects the subscribers, publishes one burst, waits for its
// deliveries and reports them.
func runBurst(ctx context.Context, c *config, pr *progress) (*burstReport, error) {
	tg, err := openTarget(ctx, c, pr)
	if err != nil {
		return nil, err
	}
	defer tg.close()
	pub, pool, cr, before := tg.pub, tg.pool, tg.cr, tg.before
	r := &fanRun{id: 1, topics: c.topics, total: c.events, statuses: make([]atomic.Int32, c.events)}
	subscribed := pool.startRun(r)
	reads, readBytes, foreign := pool.reads.Load(), pool.bytes.Load(), pool.foreign.Load()
	how := fmt.Sprintf("arrays of %d over up to %d publishers", c.batch, c.publishers)
	if c.pubStream {
		how = fmt.Sprintf("streaming publishes: %d", c.publishers)
	}
	pr.printf("burst: %d events to %d subscribers, %s", c.events, subscribed, how)
	m := newMeter(c.pid, before)
	var prof *serverProfile
	if c.profileOut != "" {
		secs := cpuProfileSeconds(c.duration)
		prof = fetchProfile(ctx, c.pprofURL, fmt.Sprintf("profile?seconds=%d", secs), c.profileOut+".cpu.pb.gz",
			time.Duration(secs)*time.Second+time.Minute)
	}
	stopProgress := pr.every(func() string {
		return fmt.Sprintf("burst: %d deliveries, %d streams dropped", r.distinct.Load(), pool.dropped.Load())
	})
	var (
		start          time.Duration
		requests, used int
	)
	if c.pubStream {
		start, requests, err = r.publishStreamBurst(ctx, pub, c.publishers)
		used = c.publishers
	} else {
		start, requests, err = r.publishArrays(ctx, pub, c.batch, c.publishers)
		used = min(c.publishers, (c.events+c.batch-1)/c.batch)
	}
	if err != nil {
		stopProgress()
		return nil, err
	}
	pubEnd := since()
	acked := r.ackedByTopic()
	caughtUp := waitBurst(ctx, pool, acked, c.grace, m)
	stopProgress()
	ph := m.stop()
	if err := prof.wait(); err != nil {
		pr.printf("the server's CPU profile: %v", err)
	}
	counts := pool.burstCounts(acked)
	lastRecv := pool.lastReceipt()
	t := pool.endRun(acked)
	b := &burstReport{
		Mode: "burst", Label: c.label, Stream: c.pubStream, connectReport: cr, Topics: c.topics, Size: c.size,
		Events: c.events, Publishers: c.publishers, PublishersUsed: used, Subscribed: subscribed, PublishRequests: requests,
		tally: t, Complete: counts.complete, TimedOut: !caughtUp,
		ReceivedPerSub:       summarizeCounts(counts.received),
		DisconnectedReceived: summarizeCounts(counts.disconnected),
		Stale:                pool.stale.Load(),
		Foreign:              pool.foreign.Load() - foreign,
		StreamBytes:          pool.bytes.Load() - readBytes,
		Server:               ph.srv,
		Tool:                 ph.tool,
	}
	if !c.pubStream {
		b.Batch = c.batch
	}
	b.publishing(r, start, pubEnd)
	b.delivery(r, t, lastRecv-start, ph)
	b.Tool.Reads = pool.reads.Load() - reads
	b.Tool.EventsPerRd = round(per(float64(t.Received), float64(b.Tool.Reads)), 2)
	b.OK, b.Why = b.verdict()
	verdict := "ok"
	if !b.OK {
		verdict = "not ok: " + b.Why
	}
	pr.printf("burst: %s; %d of %d subscribers got all %d events, %d disconnected, delivered in %.0f ms",
		verdict, b.Complete, b.Subscribed, b.Published, b.Disconnected, b.DeliverMS)
	return b, ctx.Err()
}

// publishArrays publishes the run's events as arrays of batch events: the
// arrays are taken in turn by up to publishers closed-loop publishers,
// each on a keep-alive connection of its own, opened beforehand. It
// returns when the first array was sent and how many were.
func (r *fanRun) publishArrays(ctx context.Context, pub *publisher, batch, publishers int) (start time.Duration, requests int, err error) {
	arrays := (r.total + batch - 1) / batch
	scratch := make([]pubScratch, min(publishers, arrays))
	defer func() {
		for i := range scratch {
			scratch[i].close()
		}
	}()
	for i := range scratch {
		if err := scratch[i].connect(pub); err != nil {
			return 0, 0, fmt.Errorf("connecting publisher %d: %w", i, err)
		}
	}
	jobs := make(chan int, arrays)
	for a := range arrays {
		jobs <- a
	}
	close(jobs)
	topics := topicNames(r.topics)
	var (
		wg   sync.WaitGroup
		sent atomic.Int64
	)
	start = since()
	for w := range scratch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range jobs {
				if ctx.Err() != nil {
					return
				}
				first := a * batch
				r.publishArray(ctx, pub, &scratch[w], uint64(first), min(batch, r.total-first), topics)
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	return start, int(sent.Load()), nil
}

// publishArray publishes n events numbered from first in one request and
// records its answer as the status of each of them.
func (r *fanRun) publishArray(ctx context.Context, pub *publisher, sc *pubScratch, first uint64, n int, topics []string) {
	begin := since()
	r.lastStart.Store(int64(begin))
	res := pub.publishBatch(ctx, sc, r.id, first, n, topics, begin)
	r.pubLatency.record(since() - begin)
	status := int32(res.status)
	if res.err != nil {
		r.errors.Add(uint64(n))
		msg := res.err.Error()
		r.firstErr.CompareAndSwap(nil, &msg)
		if status == 0 {
			status = -1
		}
	}
	for seq := first; seq < first+uint64(n); seq++ {
		r.statuses[seq].Store(status)
	}
}

// publishStreamBurst writes the run's events as fast as it can through n
// streaming publishes, opened beforehand: event i goes to the stream
// streamFor picks, each stream written by a goroutine of its own in
// chunks of about 16 KiB and then ended. Its answer acknowledges its
// events. It returns when the first event was written and the number of
// streams.
func (r *fanRun) publishStreamBurst(ctx context.Context, pub *publisher, n int) (start time.Duration, requests int, err error) {
	k := r.topics
	streams := make([]*pubStream, n)
	for j := range streams {
		s, err := pub.openStream(topicName(j % k))
		if err != nil {
			for _, o := range streams[:j] {
				o.conn.Close()
			}
			return 0, 0, fmt.Errorf("opening stream %d: %w", j, err)
		}
		streams[j] = s
	}
	pick := streamFor(pub, n, k)
	topics := topicNames(k)
	var wg sync.WaitGroup
	start = since()
	for j, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			begin := since()
			for i := range r.total {
				if pick(i) != j {
					continue
				}
				if ctx.Err() != nil {
					break
				}
				sent := since()
				s.add(r.id, uint64(i), topics[i%k], sent)
				s.seqs = append(s.seqs, uint64(i))
				r.statuses[i].Store(-1) // until the answer says otherwise
				if len(s.chunk) >= streamChunk && s.flush() != nil {
					break
				}
			}
			r.lastStart.Store(int64(since()))
			res := s.finish()
			r.pubLatency.record(since() - begin)
			r.acknowledge(s, res)
		}()
	}
	wg.Wait()
	return start, n, nil
}

// topicNames returns the names of the first k topics.
func topicNames(k int) []string {
	names := make([]string, k)
	for i := range names {
		names[i] = topicName(i)
	}
	return names
}

// waitBurst waits until every subscriber of the run whose stream is open
// has every acknowledged event of its topic, or until grace passes, and
// reports whether they had them. It samples the server's memory for its
// peak meanwhile.
func waitBurst(ctx context.Context, pool *subPool, acked []bitset, grace time.Duration, m *meter) bool {
	want := make([]uint64, len(acked))
	for i, a := range acked {
		want[i] = uint64(a.count())
	}
	end := since() + grace
	var nextPeek time.Duration
	for {
		if pool.caughtUp(want) {
			return true
		}
		now := since()
		if now >= end {
			return false
		}
		if now >= nextPeek {
			m.peek()
			nextPeek = now + burstPeek
		}
		if !sleep(ctx, burstPoll) {
			return false
		}
	}
}

// caughtUp reports whether every subscriber of the run whose stream is
// open has received as many distinct events of the run as want holds for
// its topic.
func (p *subPool) caughtUp(want []uint64) bool {
	for _, s := range p.subs {
		s.mu.Lock()
		behind := s.inRun && !s.ended && s.rec.received-s.rec.duplicated < want[s.topic]
		s.mu.Unlock()
		if behind {
			return false
		}
	}
	return true
}

// burstCounts are the figures of a burst per subscriber of the run.
type burstCounts struct {
	received     []int // distinct events of the run each received
	complete     int   // subscribers that received every acknowledged event of their topic
	disconnected []int // distinct events of those whose stream ended
}

// burstCounts counts, for each subscriber of the run, the distinct events
// it received, and whether it had them all.
func (p *subPool) burstCounts(acked []bitset) burstCounts {
	var b burstCounts
	for _, s := range p.subs {
		s.mu.Lock()
		if s.inRun {
			got := s.rec.got.count()
			b.received = append(b.received, got)
			if s.rec.got.missing(acked[s.topic]) == 0 {
				b.complete++
			}
			if s.ended {
				b.disconnected = append(b.disconnected, got)
			}
		}
		s.mu.Unlock()
	}
	return b
}

// countSummary sums counts up: the smallest, the median (the lower one of
// an even number), the largest and the total.
type countSummary struct {
	Min    int `json:"min"`
	Median int `json:"median"`
	Max    int `json:"max"`
	Total  int `json:"total"`
}

// summarizeCounts sums v up; it is all zeros when v is empty.
func summarizeCounts(v []int) countSummary {
	if len(v) == 0 {
		return countSummary{}
	}
	sorted := slices.Sorted(slices.Values(v))
	s := countSummary{Min: sorted[0], Median: sorted[(len(sorted)-1)/2], Max: sorted[len(sorted)-1]}
	for _, x := range v {
		s.Total += x
	}
	return s
}

// publishing fills in how the burst was published: start is when its
// first publish was sent, pubEnd when its last answer came.
func (b *burstReport) publishing(r *fanRun, start, pubEnd time.Duration) {
	for i := range r.statuses {
		if s := r.statuses[i].Load(); s >= 200 && s < 300 {
			b.Published++
		}
	}
	b.PublishErrors = r.errors.Load()
	if p := r.firstErr.Load(); p != nil {
		b.PublishError = *p
	}
	b.PublishMS = ms(pubEnd - start)
	b.PubLatencyMS = r.pubLatency.summary()
}

// delivery fills in how the burst was delivered: deliver is the time from
// its first publish to the last first receipt.
func (b *burstReport) delivery(r *fanRun, t tally, deliver time.Duration, ph phase) {
	if t.Distinct > 0 {
		b.DeliverMS = ms(deliver)
		b.DeliveriesPerS = round(per(float64(t.Distinct), deliver.Seconds()), 0)
		b.MiBPerS = round(per(float64(b.StreamBytes)/(1<<20), deliver.Seconds()), 1)
	}
	b.LatencyMS = r.latency.summary()
	b.ReadLatencyMS = r.readLatency.summary()
	b.Tool.CPUPerDeliv = perItem(ph.selfCPU, t.Distinct)
	if b.Server != nil && b.Server.Error == "" {
		b.Server.CPUPerDeliv = perItem(ph.srvCPU, t.Distinct)
		if before := b.Server.RSSBeforeKiB; before > 0 && b.Subscribed > 0 {
			b.Server.KiBPerSub = round(float64(b.Server.RSSAfterKiB-before)/float64(b.Subscribed), 2)
		}
	}
}

// verdict says whether every subscriber got the whole burst, once, on
// its first connection.
func (b *burstReport) verdict() (bool, string) {
	switch {
	case b.Subscribed == 0:
		return false, "no subscriber"
	case b.Published < uint64(b.Events):
		why := fmt.Sprintf("%d of %d events published", b.Published, b.Events)
		if b.PublishError != "" {
			why += ": " + b.PublishError
		}
		return false, why
	case b.Disconnected > 0:
		return false, fmt.Sprintf("%d streams dropped", b.Disconnected)
	case b.Lost > 0:
		return false, fmt.Sprintf("%d deliveries lost", b.Lost)
	case b.Duplicated > 0:
		return false, fmt.Sprintf("%d deliveries duplicated", b.Duplicated)
	case b.Complete < b.Subscribed:
		return false, fmt.Sprintf("%d subscribers missed events", b.Subscribed-b.Complete)
	}
	return true, ""
}
