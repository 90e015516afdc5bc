//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// fanRun is one measured run of publishing to the subscribers.
type fanRun struct {
	id     int
	topics int
	rate   float64
	total  int           // events to publish
	late   time.Duration // a publish that starts later than this after it was due is late

	distinct    atomic.Uint64 // first receipts
	latency     histogram     // publish to arrival, first receipts only
	readLatency histogram     // publish to the tool's read

	pubLatency histogram // request round trip
	lag        histogram // publish start behind schedule
	lateCount  atomic.Uint64
	statuses   []atomic.Int32 // per event: HTTP status, -1 no answer, 0 not sent
	errors     atomic.Uint64
	firstErr   atomic.Pointer[string]
	lastStart  atomic.Int64 // of a publish, since epoch
}

// job is one scheduled publish.
type job struct {
	seq uint64
	due time.Duration // since epoch
}

// target is what a run publishes with and the subscribers it publishes
// to, connected, and the server's meter from before they connected.
type target struct {
	pub    *publisher
	pool   *subPool
	cr     connectReport
	before *meter
}

// openTarget opens the publisher, then connects the subscribers and lets
// the warm-up pass; close releases both.
func openTarget(ctx context.Context, c *config, pr *progress) (*target, error) {
	pub, err := newPublisherFor(c)
	if err != nil {
		return nil, err
	}
	before := newMeter(c.pid, nil)
	pool, cr, err := openPool(ctx, c, pr)
	if err != nil {
		pub.close()
		return nil, err
	}
	sleep(ctx, c.warmup)
	return &target{pub: pub, pool: pool, cr: cr, before: before}, nil
}

func (tg *target) close() {
	tg.pool.close()
	tg.pub.close()
}

// runFanout connects, publishes at one rate and reports.
func runFanout(ctx context.Context, c *config, pr *progress) (*fanoutReport, error) {
	tg, err := openTarget(ctx, c, pr)
	if err != nil {
		return nil, err
	}
	defer tg.close()
	pool, pub, cr := tg.pool, tg.pub, tg.cr
	step := runStep(ctx, c, pool, pub, 1, c.rate, tg.before, pr)
	return &fanoutReport{Mode: "fanout", Label: c.label, Stream: c.pubStream, connectReport: cr, Topics: c.topics,
		Size: c.size, Publishers: c.publishers, stepReport: step}, ctx.Err()
}

// runSearch connects once, then publishes at increasing rates until a
// step fails.
func runSearch(ctx context.Context, c *config, pr *progress) (*searchReport, error) {
	tg, err := openTarget(ctx, c, pr)
	if err != nil {
		return nil, err
	}
	defer tg.close()
	pool, pub := tg.pool, tg.pub
	r := &searchReport{Mode: "search", Label: c.label, Stream: c.pubStream, connectReport: tg.cr, Topics: c.topics,
		Size: c.size, Publishers: c.publishers, StoppedBy: "rate-max reached"}
	const maxSteps = 1000
	for i, rate := 0, c.rate; i < maxSteps && rate <= c.rateMax; i, rate = i+1, rate+c.rateStep {
		step := runStep(ctx, c, pool, pub, i+1, rate, nil, pr)
		r.Steps = append(r.Steps, step)
		if ctx.Err() != nil {
			r.StoppedBy = "interrupted"
			break
		}
		if !step.OK {
			r.StoppedBy = fmt.Sprintf("%g/s: %s", rate, step.Why)
			break
		}
		r.MaxRateOK, r.MaxDelivOK = rate, step.DeliveriesPerS
		if c.rateStep == 0 {
			break
		}
		sleep(ctx, c.pause)
	}
	return r, ctx.Err()
}

// newPublisherFor returns the publisher the flags describe.
func newPublisherFor(c *config) (*publisher, error) {
	tlsConf, err := tlsConfig(c.caFile, c.insecure)
	if err != nil {
		return nil, err
	}
	return newPublisher(pubOptions{
		url: c.pubURL, body: c.pubBody, batch: c.pubBatch, contentType: c.pubType, escape: c.pubEscape, client: c.pubClient,
		headers: c.pubHeaders, size: c.size, conns: max(c.publishers, c.maxPublishers), timeout: c.pubTimeout,
		tls: tlsConf,
	})
}

// runStep publishes at rate for the duration, waits for the deliveries,
// and counts them. before, when set, holds the memory samples taken
// before the subscribers connected.
func runStep(ctx context.Context, c *config, pool *subPool, pub *publisher, id int, rate float64, before *meter, pr *progress) stepReport {
	total := max(int(math.Round(rate*c.duration.Seconds())), 1)
	r := &fanRun{id: id, topics: c.topics, rate: rate, total: total, late: c.late, statuses: make([]atomic.Int32, total)}
	subscribed := pool.startRun(r)
	reads, foreign := pool.reads.Load(), pool.foreign.Load()
	pr.printf("run %d: %g events/s for %s to %d subscribers", id, rate, c.duration, subscribed)
	m := newMeter(c.pid, before)
	var prof *serverProfile
	if c.profileOut != "" && id == 1 {
		secs := cpuProfileSeconds(c.duration)
		prof = fetchProfile(ctx, c.pprofURL, fmt.Sprintf("profile?seconds=%d", secs), c.profileOut+".cpu.pb.gz",
			time.Duration(secs)*time.Second+time.Minute)
	}
	start := since()
	stopProgress := pr.every(func() string {
		return fmt.Sprintf("run %d: %d deliveries, %d publishes late", id, r.distinct.Load(), r.lateCount.Load())
	})
	var workers int
	if c.pubStream {
		workers = r.publishStreamed(ctx, pub, c.publishers, start)
	} else {
		workers = r.publishAll(ctx, pub, c.publishers, max(c.publishers, c.maxPublishers), start)
	}
	pubEnd := since()
	acked := r.ackedByTopic()
	expected := pool.expected(acked)
	waitFor(ctx, c.grace, func() bool { return r.distinct.Load() >= expected })
	stopProgress()
	ph := m.stop()
	if err := prof.wait(); err != nil {
		pr.printf("the server's CPU profile: %v", err)
	}
	t := pool.endRun(acked)
	s := r.report(c, pool, t, subscribed, start, pubEnd, ph)
	s.PublishersUsed = workers
	s.Foreign = pool.foreign.Load() - foreign
	s.Tool.Reads = pool.reads.Load() - reads
	s.Tool.EventsPerRd = round(per(float64(t.Received), float64(s.Tool.Reads)), 2)
	verdict := "ok"
	if !s.OK {
		verdict = "not ok: " + s.Why
	}
	pr.printf("run %d: %g events/s: %s; %.0f deliveries/s, %d lost, %d duplicated, p50 %.1f ms, p99 %.1f ms",
		id, rate, verdict, s.DeliveriesPerS, s.Lost, s.Duplicated, s.LatencyMS.P50, s.LatencyMS.P99)
	return s
}

// publishAll runs the open-loop schedule: event i is due at start+i/rate
// whatever happened to the earlier ones. Workers publish the events, each
// on its own keep-alive connection; when an event is due and no worker is
// idle, another one starts, up to maxWorkers. It returns the number of
// workers used.
func (r *fanRun) publishAll(ctx context.Context, pub *publisher, workers, maxWorkers int, start time.Duration) int {
	jobs := make(chan job)
	var (
		wg   sync.WaitGroup
		idle atomic.Int64 // workers done with their last event
	)
	spawn := func() {
		idle.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, pub, jobs, &idle)
		}()
	}
	for range workers {
		spawn()
	}
	interval := float64(time.Second) / r.rate
	for i := range r.total {
		due := start + time.Duration(float64(i)*interval)
		if !sleep(ctx, due-since()) {
			break
		}
		if idle.Load() == 0 && workers < maxWorkers {
			workers++
			spawn()
		}
		jobs <- job{seq: uint64(i), due: due}
	}
	close(jobs)
	wg.Wait()
	return workers
}

// work publishes scheduled events until there are no more; idle counts
// it while it waits for one.
func (r *fanRun) work(ctx context.Context, pub *publisher, jobs <-chan job, idle *atomic.Int64) {
	var sc pubScratch
	defer sc.close()
	k := uint64(r.topics)
	for j := range jobs {
		idle.Add(-1)
		if ctx.Err() == nil {
			r.publishOne(ctx, pub, &sc, j, k)
		}
		idle.Add(1)
	}
}

// publishOne publishes one scheduled event and records how it went.
func (r *fanRun) publishOne(ctx context.Context, pub *publisher, sc *pubScratch, j job, k uint64) {
	begin := since()
	lag := begin - j.due
	r.lag.record(lag)
	if lag > r.late {
		r.lateCount.Add(1)
	}
	r.lastStart.Store(int64(begin))
	res := pub.publish(ctx, sc, r.id, j.seq, topicName(int(j.seq%k)), begin)
	r.pubLatency.record(since() - begin)
	status := int32(res.status)
	if res.err != nil {
		r.errors.Add(1)
		msg := res.err.Error()
		r.firstErr.CompareAndSwap(nil, &msg)
		if status == 0 {
			status = -1
		}
	}
	r.statuses[j.seq].Store(status)
}

// ackedByTopic returns, per topic, the events the server acknowledged,
// numbered within the topic.
func (r *fanRun) ackedByTopic() []bitset {
	k := r.topics
	per := (r.total + k - 1) / k
	acked := make([]bitset, k)
	for i := range acked {
		acked[i] = newBitset(nil, per)
	}
	for i := range r.statuses {
		if s := r.statuses[i].Load(); s >= 200 && s < 300 {
			acked[i%k].add(uint64(i / k))
		}
	}
	return acked
}

// waitFor polls done until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, done func() bool) {
	end := since() + d
	for !done() && since() < end {
		if !sleep(ctx, 5*time.Millisecond) {
			return
		}
	}
}

// report sums a run up.
func (r *fanRun) report(c *config, pool *subPool, t tally, subscribed int, start, pubEnd time.Duration, ph phase) stepReport {
	published := uint64(0)
	for i := range r.statuses {
		if r.statuses[i].Load() != 0 {
			published++
		}
	}
	lastRecv := pool.lastReceipt()
	elapsed := max(lastRecv-start, pubEnd-start)
	s := stepReport{
		Rate:           rate3(r.rate),
		DurationS:      seconds(c.duration),
		Subscribed:     subscribed,
		Published:      published,
		PublishErrors:  r.errors.Load(),
		PublishRate:    round(per(float64(published), time.Duration(r.lastStart.Load()-int64(start)).Seconds()+1/r.rate), 1),
		Late:           r.lateCount.Load(),
		LagMS:          r.lag.summary(),
		tally:          t,
		Stale:          pool.stale.Load(),
		DeliveriesPerS: round(per(float64(t.Distinct), elapsed.Seconds()), 0),
		ElapsedS:       seconds(elapsed),
		DrainS:         seconds(ph.wall - (pubEnd - start)),
		LatencyMS:      r.latency.summary(),
		ReadLatencyMS:  r.readLatency.summary(),
		PubLatencyMS:   r.pubLatency.summary(),
		Server:         ph.srv,
		Tool:           ph.tool,
	}
	if p := r.firstErr.Load(); p != nil {
		s.PublishError = *p
	}
	s.Behind = s.Late*100 > published || published < uint64(r.total)
	s.Tool.CPUPerDeliv = perItem(ph.selfCPU, t.Distinct)
	if s.Server != nil && s.Server.Error == "" {
		s.Server.CPUPerDeliv = perItem(ph.srvCPU, t.Distinct)
		if before := s.Server.RSSBeforeKiB; before > 0 && subscribed > 0 {
			s.Server.KiBPerSub = round(float64(s.Server.RSSAfterKiB-before)/float64(subscribed), 2)
		}
	}
	s.OK, s.Why = s.verdict(c.maxP99)
	return s
}

// verdict says whether a run delivered everything in time.
func (s *stepReport) verdict(maxP99 time.Duration) (bool, string) {
	switch {
	case s.Subscribed == 0:
		return false, "no subscriber"
	case s.PublishErrors > 0:
		return false, fmt.Sprintf("%d publishes failed", s.PublishErrors)
	case s.Lost > 0:
		return false, fmt.Sprintf("%d deliveries lost", s.Lost)
	case s.Duplicated > 0:
		return false, fmt.Sprintf("%d deliveries duplicated", s.Duplicated)
	case s.Disconnected > 0:
		return false, fmt.Sprintf("%d streams dropped", s.Disconnected)
	case s.Behind:
		return false, fmt.Sprintf("the publisher fell behind its schedule (%d of %d publishes late)", s.Late, s.Published)
	case s.LatencyMS.P99 > ms(maxP99):
		return false, fmt.Sprintf("p99 latency %.1f ms", s.LatencyMS.P99)
	}
	return true, ""
}

func rate3(x float64) float64 { return round(x, 3) }

// startRun resets every open subscriber's receipts for run r, makes r the
// current run, and returns how many subscribers it has.
func (p *subPool) startRun(r *fanRun) int {
	per := (r.total + r.topics - 1) / r.topics
	n := 0
	for _, s := range p.subs {
		s.mu.Lock()
		s.inRun = s.open && !s.ended
		if s.inRun {
			n++
			s.rec.reset(per)
		}
		s.last = 0
		s.mu.Unlock()
	}
	p.stale.Store(0)
	p.run.Store(r)
	return n
}

// expected returns the deliveries due to the subscribers of the run.
func (p *subPool) expected(acked []bitset) uint64 {
	counts := make([]uint64, len(acked))
	for i, a := range acked {
		counts[i] = uint64(a.count())
	}
	var n uint64
	for _, s := range p.subs {
		s.mu.Lock()
		if s.inRun {
			n += counts[s.topic]
		}
		s.mu.Unlock()
	}
	return n
}

// endRun stops counting receipts and tallies the run.
func (p *subPool) endRun(acked []bitset) tally {
	p.run.Store(nil)
	var t tally
	for _, s := range p.subs {
		s.mu.Lock()
		if s.inRun {
			t.addSubscriber(&s.rec, acked[s.topic])
			if s.ended {
				t.Disconnected++
			}
		}
		s.mu.Unlock()
	}
	return t
}

// lastReceipt returns when the last first receipt of the run happened.
func (p *subPool) lastReceipt() time.Duration {
	var last time.Duration
	for _, s := range p.subs {
		s.mu.Lock()
		last = max(last, s.last)
		s.mu.Unlock()
	}
	return last
}
