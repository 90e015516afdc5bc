//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat: USER_HZ,
// which is 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procSample is a process's memory and CPU time at one moment.
type procSample struct {
	rssKiB int64
	cpu    time.Duration // user + system
}

// sampleProc reads /proc/<pid>/status (VmRSS) and /proc/<pid>/stat
// (utime + stime).
func sampleProc(pid int) (procSample, error) {
	rss, err := readRSS(pid)
	if err != nil {
		return procSample{}, err
	}
	cpu, err := readCPU(pid)
	if err != nil {
		return procSample{}, err
	}
	return procSample{rssKiB: rss, cpu: cpu}, nil
}

// readRSS returns a process's resident set size in KiB.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the memory of process %d: %w", pid, err)
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(string(f[0]), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// readCPU returns the CPU time a process used so far, all its threads,
// living and ended.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w", pid, err)
	}
	// the command name, in parentheses, may hold spaces: fields are
	// counted from after its closing parenthesis, which ends field 2
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseInt(string(f[utime]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[stime]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return time.Duration(u+s) * clockTick, nil
}

// sampleSelf returns this process's memory and CPU time, the latter to
// the microsecond.
func sampleSelf() procSample {
	rss, _ := readRSS(os.Getpid())
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return procSample{rssKiB: rss, cpu: cpu}
}

// fileLimit returns the soft limit on open files (Go raises it to the
// hard limit at start).
func fileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}
