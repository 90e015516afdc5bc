//go:build linux

package main

import (
	"runtime"
	"time"
)

// saturated is the share of its processors above which the tool itself
// may be what limits a measurement.
const saturated = 0.9

// meter measures the server's and the tool's CPU time and memory over
// one phase.
type meter struct {
	pid          int
	start        time.Duration
	srv0, self0  procSample
	srvErr       error
	srvPeakKiB   int64
	srvBeforeKiB int64 // the server's memory before the subscribers came
	selfBefore   int64
}

// newMeter takes the samples of the start of a phase. before, when set,
// is the memory of both processes before anything was connected.
func newMeter(pid int, before *meter) *meter {
	m := &meter{pid: pid, start: since(), self0: sampleSelf()}
	if pid > 0 {
		m.srv0, m.srvErr = sampleProc(pid)
		m.srvPeakKiB = m.srv0.rssKiB
	}
	m.srvBeforeKiB, m.selfBefore = m.srv0.rssKiB, m.self0.rssKiB
	if before != nil {
		m.srvBeforeKiB, m.selfBefore = before.srv0.rssKiB, before.self0.rssKiB
	}
	return m
}

// peek samples the server's memory, for its peak.
func (m *meter) peek() {
	if m.pid <= 0 || m.srvErr != nil {
		return
	}
	if rss, err := readRSS(m.pid); err == nil {
		m.srvPeakKiB = max(m.srvPeakKiB, rss)
	}
}

// phase is the end of a measured phase: CPU used and memory.
type phase struct {
	wall    time.Duration
	srvCPU  time.Duration
	selfCPU time.Duration
	srv     *serverReport // nil without --pid
	tool    toolReport
}

// stop takes the samples of the end of the phase.
func (m *meter) stop() phase {
	ph := phase{wall: since() - m.start}
	self := sampleSelf()
	ph.selfCPU = self.cpu - m.self0.cpu
	ph.tool = toolReport{
		RSSBeforeKiB: m.selfBefore,
		RSSAfterKiB:  self.rssKiB,
		CPUSeconds:   seconds(ph.selfCPU),
		CPUUtil:      round(per(ph.selfCPU.Seconds(), ph.wall.Seconds()), 3),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
	}
	ph.tool.Saturated = ph.selfCPU.Seconds() >= saturated*ph.wall.Seconds()*float64(ph.tool.GOMAXPROCS)
	if m.pid <= 0 {
		return ph
	}
	ph.srv = &serverReport{PID: m.pid, RSSBeforeKiB: m.srvBeforeKiB}
	srv, err := sampleProc(m.pid)
	if err == nil {
		err = m.srvErr
	}
	if err != nil {
		ph.srv.Error = err.Error()
		return ph
	}
	ph.srvCPU = srv.cpu - m.srv0.cpu
	ph.srv.RSSAfterKiB = srv.rssKiB
	ph.srv.RSSPeakKiB = max(m.srvPeakKiB, srv.rssKiB)
	ph.srv.CPUSeconds = seconds(ph.srvCPU)
	ph.srv.CPUUtil = round(per(ph.srvCPU.Seconds(), ph.wall.Seconds()), 3)
	return ph
}

// perItem returns d in microseconds per item.
func perItem(d time.Duration, n uint64) float64 {
	return round(per(float64(d.Nanoseconds())/1000, float64(n)), 3)
}
