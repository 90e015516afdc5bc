package benchfloor

import (
	"os"
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestMain runs the tests and removes the Caddy binary they built and
// the in-process Caddy's storage.
func TestMain(m *testing.M) { caddyproc.Main(m, func() { _ = os.RemoveAll(floorStorage()) }) }
