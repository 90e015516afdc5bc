package redis

import (
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
)

// TestMain runs up to 8 tests at once: most wait on Redis servers (their
// start, a failover, an expiry), each under a key prefix or on a server
// of its own.
func TestMain(m *testing.M) { ssetest.MainParallel(m, 8) }
