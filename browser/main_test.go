//go:build unix

package browser

import (
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestMain runs the tests, up to 4 of the parallel ones at once (they
// mostly wait: on Chromium, on reconnection delays, on processes that
// stop).
func TestMain(m *testing.M) { caddyproc.MainParallel(m, 4) }
