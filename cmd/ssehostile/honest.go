//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// honestTopic is the honest subscriber's topic, which no attack uses.
const honestTopic = "honest"

// Bounds of the honest subscriber.
const (
	honestMaxInFlight  = 256              // publishes in flight; more are skipped
	honestMaxReconnect = 1000             // reconnections of its stream
	honestGrace        = 3 * time.Second  // wait for the last deliveries
	honestPubTimeout   = 10 * time.Second // a publish's round trip
	honestMaxLength    = time.Hour        // events published at most: an hour's
)

// honestStats are the honest subscriber's figures over its window.
type honestStats struct {
	HonestS    float64 `json:"honest_s"`              // its window
	Published  int     `json:"honest_published"`      // publishes sent
	Acked      int     `json:"honest_acked"`          // answered 200
	Received   int     `json:"honest_received"`       // distinct events received
	Lost       int     `json:"honest_lost"`           // acknowledged, never received
	Duplicated int     `json:"honest_duplicated"`     // received more than once
	Reconnects int     `json:"honest_reconnects"`     // its stream ended and was opened again
	Skipped    int     `json:"honest_skipped"`        // not sent: too many publishes in flight
	PubErrors  int     `json:"honest_publish_errors"` // not answered 200, or not answered
	P50        float64 `json:"honest_p50_ms"`         // publish-to-arrival latency of first deliveries
	P99        float64 `json:"honest_p99_ms"`
	Max        float64 `json:"honest_max_ms"`
	PubP99     float64 `json:"honest_publish_p99_ms"` // a publish's round trip
}

// honest is a subscriber that reads at network speed, over plain
// HTTP/1.1, the events the tool publishes to its topic at --honest-rate,
// each carrying its send time. It resumes with Last-Event-ID when its
// stream ends, as a browser would.
type honest struct {
	cfg     *config
	c       *caddyProc
	client  *http.Client
	started time.Time

	cancelSub context.CancelFunc
	subDone   chan struct{}
	stopPub   chan struct{}
	pubDone   chan struct{}
	stopOnce  sync.Once

	mu        sync.Mutex
	latency   []time.Duration // first deliveries
	pubLat    []time.Duration
	seen      map[int]bool
	acked     map[int]bool
	lastID    string
	stats     honestStats
	finalised bool
}

// startHonest opens the honest subscriber's stream and starts publishing.
func startHonest(ctx context.Context, cfg *config, c *caddyProc) (*honest, error) {
	h := &honest{cfg: cfg, c: c, subDone: make(chan struct{}), stopPub: make(chan struct{}),
		pubDone: make(chan struct{}), seen: map[int]bool{}, acked: map[int]bool{},
		client: &http.Client{Timeout: honestPubTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: honestMaxInFlight}}}
	subCtx, cancel := context.WithCancel(ctx)
	h.cancelSub = cancel
	first, err := h.open(subCtx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening the honest subscriber's stream: %w", err)
	}
	h.started = time.Now()
	go h.subscribe(subCtx, first)
	go h.publish(ctx)
	return h, nil
}

// open opens the stream, resuming after the last event received.
func (h *honest) open(ctx context.Context) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.c.siteURL("/events?topic="+honestTopic), nil)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if h.lastID != "" {
		req.Header.Set("Last-Event-ID", h.lastID)
	}
	h.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp, nil
}

// subscribe reads the stream, and opens it again when it ends, until
// ctx ends.
func (h *honest) subscribe(ctx context.Context, resp *http.Response) {
	defer close(h.subDone)
	for range honestMaxReconnect {
		if resp != nil {
			h.read(resp.Body)
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		h.mu.Lock()
		h.stats.Reconnects++
		h.mu.Unlock()
		resp, _ = h.open(ctx)
	}
}

// read parses the event stream until it ends.
func (h *honest) read(body io.Reader) {
	br := bufio.NewReaderSize(body, 16<<10)
	var id, data string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data != "" {
				h.received(id, data)
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimSpace(line[5:])
		}
	}
}

// received counts an event whose data is "<seq> <send time in ns>".
func (h *honest) received(id, data string) {
	now := time.Now().UnixNano()
	seqText, sentText, ok := strings.Cut(data, " ")
	seq, err1 := strconv.Atoi(seqText)
	sent, err2 := strconv.ParseInt(sentText, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if id != "" {
		h.lastID = id
	}
	if h.seen[seq] {
		h.stats.Duplicated++
		return
	}
	h.seen[seq] = true
	h.latency = append(h.latency, time.Duration(now-sent))
}

// publish publishes an event every 1/rate, open loop, each in a request
// of its own, until stopPub is closed.
func (h *honest) publish(ctx context.Context) {
	defer close(h.pubDone)
	var wg sync.WaitGroup
	defer wg.Wait()
	inFlight := make(chan struct{}, honestMaxInFlight)
	interval := time.Second / time.Duration(h.cfg.honestRate)
	start := time.Now()
	for seq := range int(honestMaxLength / interval) {
		select {
		case <-h.stopPub:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(time.Duration(seq) * interval))):
		}
		select {
		case inFlight <- struct{}{}:
		default:
			h.mu.Lock()
			h.stats.Skipped++
			h.mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inFlight }()
			h.publishOne(ctx, seq)
		}()
	}
}

// publishOne publishes event seq with its send time.
func (h *honest) publishOne(ctx context.Context, seq int) {
	start := time.Now()
	body := fmt.Sprintf("%d %d", seq, start.UnixNano())
	err := h.post(ctx, body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stats.Published++
	if err != nil {
		h.stats.PubErrors++
		return
	}
	h.acked[seq] = true
	h.pubLat = append(h.pubLat, time.Since(start))
}

// post sends one publish and checks that it was answered 200.
func (h *honest) post(ctx context.Context, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.c.siteURL("/publish?topic="+honestTopic),
		strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// stop ends the publishing, waits up to honestGrace for the acknowledged
// events to arrive, closes the stream and returns the figures.
func (h *honest) stop() honestStats {
	window := time.Since(h.started)
	h.stopOnce.Do(func() { close(h.stopPub) })
	<-h.pubDone
	deadline := time.Now().Add(honestGrace)
	for !h.allArrived() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	h.cancelSub()
	<-h.subDone
	return h.finalise(window)
}

// abort ends the subscriber and the publisher without figures.
func (h *honest) abort() {
	h.stopOnce.Do(func() { close(h.stopPub) })
	h.cancelSub()
	<-h.pubDone
	<-h.subDone
}

// allArrived says whether every acknowledged event was received.
func (h *honest) allArrived() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for seq := range h.acked {
		if !h.seen[seq] {
			return false
		}
	}
	return true
}

// finalise computes the figures.
func (h *honest) finalise(window time.Duration) honestStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stats
	s.HonestS = seconds(window)
	s.Acked = len(h.acked)
	s.Received = len(h.seen)
	for seq := range h.acked {
		if !h.seen[seq] {
			s.Lost++
		}
	}
	s.P50, s.P99, s.Max = quantileMs(h.latency, 0.5), quantileMs(h.latency, 0.99), quantileMs(h.latency, 1)
	s.PubP99 = quantileMs(h.pubLat, 0.99)
	return s
}

// quantileMs returns the q-quantile of ds in milliseconds (nearest rank,
// rounded to µs), 0 for none.
func quantileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	sorted := append([]time.Duration(nil), ds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return math.Round(float64(sorted[rank].Microseconds())) / 1000
}

// errStatus is a publish answered with another status than expected.
var errStatus = errors.New("unexpected status")

// statusError describes an answer with an unexpected status and its body.
func statusError(code int, body []byte) error {
	return fmt.Errorf("%w %d: %s", errStatus, code, bytes.TrimSpace(body))
}
