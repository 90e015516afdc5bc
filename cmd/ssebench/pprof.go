//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// serverProfile fetches a profile from the server's pprof endpoint
// (--pprof) into a file; the fetch of a CPU profile lasts as long as the
// profile.
type serverProfile struct {
	done chan error
}

// fetchProfile starts fetching name (profile?seconds=N, heap?gc=1, ...)
// from base into path, in the background.
func fetchProfile(ctx context.Context, base, name, path string, timeout time.Duration) *serverProfile {
	sp := &serverProfile{done: make(chan error, 1)}
	go func() {
		sp.done <- getProfile(ctx, strings.TrimSuffix(base, "/")+"/"+name, path, timeout)
	}()
	return sp
}

// wait returns once the profile is written, with the error if any.
func (sp *serverProfile) wait() error {
	if sp == nil {
		return nil
	}
	return <-sp.done
}

func getProfile(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("fetching %s: %s: %s", url, resp.Status, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetching %s: %w", url, err)
	}
	return f.Close()
}

// cpuProfileSeconds is how long the server's CPU profile of a run lasts:
// its publishing phase, in whole seconds, at least one.
func cpuProfileSeconds(d time.Duration) int {
	return max(int(d/time.Second), 1)
}
