package e2e

import (
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestMain runs the tests, up to 8 of the parallel ones at once (they
// mostly wait on Caddy processes).
func TestMain(m *testing.M) { caddyproc.MainParallel(m, 8) }
