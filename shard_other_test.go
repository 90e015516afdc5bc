//go:build !linux

package caddysse

import "testing"

// runShards runs the package's tests in this process: the split of the
// Caddy-level tests into processes (shard_test.go) is Linux's.
func runShards(m *testing.M) int { return m.Run() }
