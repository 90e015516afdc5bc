//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// result is the JSON line of one measurement. Memory is in KiB, times in
// seconds unless the name says ms.
type result struct {
	Attack string `json:"attack"`
	Label  string `json:"label"`
	Scale  int    `json:"scale"`
	Unit   string `json:"scale_unit"`

	RSSBaseKiB  int64 `json:"rss_base_kib"`        // before the attack
	HeapBaseKiB int64 `json:"heap_inuse_base_kib"` // before the attack, after a GC
	RSSReadyKiB int64 `json:"rss_ready_kib"`       // once the attack was in place
	RSSKiB      int64 `json:"rss_kib"`             // at the end of the attack
	HeapKiB     int64 `json:"heap_inuse_kib"`      // at the end of the attack, after a GC
	TCPBaseKiB  int64 `json:"tcp_mem_base_kib"`    // every TCP socket of the machine, before the attack
	TCPKiB      int64 `json:"tcp_mem_kib"`         // the same at the end of the attack

	AttackS float64 `json:"attack_s"` // time to put the attack in place
	CPUS    float64 `json:"cpu_s"`    // Caddy's CPU time from the attack's start to the honest window's end

	StopS         *float64 `json:"stop_s,omitempty"`          // SIGTERM to exit
	StopOverCap   bool     `json:"stop_over_cap,omitempty"`   // still running at --cap: killed
	ReloadS       *float64 `json:"reload_s,omitempty"`        // /load posted to no subscriber left
	ReloadOverCap bool     `json:"reload_over_cap,omitempty"` // subscribers left at --cap
	LoadS         *float64 `json:"load_s,omitempty"`          // /load's answer, if within --cap

	honestStats

	Notes map[string]any `json:"notes,omitempty"`
}

// runner is one measurement under way: the attack, its Caddy, the result
// being filled, and what closes the attack's clients.
type runner struct {
	cfg *config
	a   attack
	c   *caddyProc
	res *result

	mu      sync.Mutex
	closers []func()
	atEnd   []func()
}

// note adds a note to the result.
func (r *runner) note(key string, value any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.res.Notes == nil {
		r.res.Notes = map[string]any{}
	}
	r.res.Notes[key] = value
}

// onClose registers what ends an attack's client at the end.
func (r *runner) onClose(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closers = append(r.closers, f)
}

// onEnd registers what notes the attack's state at its end, before the
// stop or the reload.
func (r *runner) onEnd(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.atEnd = append(r.atEnd, f)
}

// ending runs what onEnd registered.
func (r *runner) ending() {
	r.mu.Lock()
	fs := r.atEnd
	r.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// closeAll ends the attack's clients.
func (r *runner) closeAll() {
	r.mu.Lock()
	fs := r.closers
	r.closers = nil
	r.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// measure runs one attack against a fresh Caddy: the honest subscriber
// starts, the attack is put in place, the honest window ends (at least
// --min-duration, at most the attack's whole length), memory is read,
// then the attack's end (a stop or a reload) is timed.
func measure(ctx context.Context, cfg *config, a attack) (*result, error) {
	cfg.logf("%s %s at %d %s: starting caddy", cfg.attack, cfg.label, cfg.scale, a.unit)
	c, err := startCaddy(ctx, cfg, a)
	if err != nil {
		return nil, err
	}
	defer c.cleanup()
	r := &runner{cfg: cfg, a: a, c: c, res: &result{Attack: cfg.attack, Label: cfg.label, Scale: cfg.scale, Unit: a.unit}}
	defer r.closeAll()
	if r.res.HeapBaseKiB, r.res.RSSBaseKiB, r.res.TCPBaseKiB, err = r.memory(); err != nil {
		return nil, err
	}
	h, err := startHonest(ctx, cfg, c)
	if err != nil {
		return nil, err
	}
	defer h.abort()
	if err := r.attack(ctx, h); err != nil {
		return nil, err
	}
	if r.res.HeapKiB, r.res.RSSKiB, r.res.TCPKiB, err = r.memory(); err != nil {
		return nil, err
	}
	cfg.logf("%s %s: heap %d KiB, rss %d KiB, honest p99 %.1f ms, lost %d", cfg.attack, cfg.label,
		r.res.HeapKiB, r.res.RSSKiB, r.res.P99, r.res.Lost)
	r.ending()
	finish := a.finish
	if finish == nil {
		finish = measureStop
	}
	if err := finish(ctx, r); err != nil {
		return nil, err
	}
	return r.res, nil
}

// attack puts the attack in place next to the honest subscriber h, holds
// it until h's window ends, and takes h's figures.
func (r *runner) attack(ctx context.Context, h *honest) error {
	cpuStart, err := r.c.cpuTime()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := r.a.setup(ctx, r); err != nil {
		return err
	}
	r.res.AttackS = seconds(time.Since(start))
	rss, err := r.c.rssKiB()
	if err != nil {
		return err
	}
	r.res.RSSReadyKiB = rss
	r.cfg.logf("%s %s: in place after %.1f s, rss %d KiB", r.cfg.attack, r.cfg.label, r.res.AttackS, rss)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(h.started.Add(r.cfg.minDuration))):
	}
	cpuEnd, err := r.c.cpuTime()
	if err != nil {
		return err
	}
	r.res.CPUS = seconds(cpuEnd - cpuStart)
	r.res.honestStats = h.stop()
	return nil
}

// memory returns Caddy's heap in use after a forced GC, its RSS, and the
// machine's TCP memory.
func (r *runner) memory() (heap, rss, tcp int64, err error) {
	if heap, err = r.c.heapInuseKiB(); err != nil {
		return 0, 0, 0, err
	}
	if rss, err = r.c.rssKiB(); err != nil {
		return 0, 0, 0, err
	}
	tcp, err = tcpMemKiB()
	return heap, rss, tcp, err
}

// measureStop times SIGTERM to Caddy's exit, up to --cap.
func measureStop(_ context.Context, r *runner) error {
	r.cfg.logf("%s %s: SIGTERM", r.cfg.attack, r.cfg.label)
	took, exited := r.c.terminate(r.cfg.capDuration)
	r.res.StopS = ptr(seconds(took))
	r.res.StopOverCap = !exited
	r.cfg.logf("%s %s: stop %.2f s (exited: %v)", r.cfg.attack, r.cfg.label, seconds(took), exited)
	return nil
}

// measureReload posts a slightly changed config and times until the hub
// counts no subscriber (the old config's stream handlers have all
// returned), up to --cap; Caddy is then killed.
func measureReload(ctx context.Context, r *runner) error {
	// the honest subscriber has gone: only the attack's streams are left
	if _, err := r.c.waitSubscribers(ctx, 10*time.Second, func(n int) bool { return n <= r.res.Scale }); err != nil {
		return err
	}
	r.cfg.logf("%s %s: reload", r.cfg.attack, r.cfg.label)
	lctx, cancel := context.WithTimeout(ctx, r.cfg.capDuration)
	defer cancel()
	start := time.Now()
	loaded := make(chan error, 1)
	var loadTook time.Duration
	go func() {
		err := r.c.load(lctx, caddyfile(r.cfg, r.a, r.c.storage, true))
		loadTook = time.Since(start)
		loaded <- err
	}()
	_, err := r.c.waitSubscribers(ctx, r.cfg.capDuration, func(n int) bool { return n == 0 })
	r.res.ReloadS = ptr(seconds(time.Since(start)))
	r.res.ReloadOverCap = err != nil
	select {
	case err := <-loaded:
		r.res.LoadS = ptr(seconds(loadTook))
		if err != nil {
			r.note("load_error", err.Error())
		}
	case <-time.After(time.Until(start.Add(r.cfg.capDuration))):
		r.note("load_error", "no answer within the cap")
	}
	r.cfg.logf("%s %s: reload %.2f s (over the cap: %v)", r.cfg.attack, r.cfg.label, *r.res.ReloadS, r.res.ReloadOverCap)
	r.c.kill()
	return nil
}

// seconds rounds d to milliseconds, in seconds.
func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// errorf wraps an attack's error with what it was doing.
func errorf(what string, err error) error { return fmt.Errorf("%s: %w", what, err) }
