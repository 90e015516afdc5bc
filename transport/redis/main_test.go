package redis

import (
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestMain runs up to 8 tests at once: most wait on Redis servers (their
// start, an expiry), each under a key prefix or on a server of its own.
// The tests whose faults are timed (a failover, a pause, a lost reply, a
// killed connection) and the contract suite run first, one at a time.
func TestMain(m *testing.M) { ssetest.MainParallel(m, 8) }
