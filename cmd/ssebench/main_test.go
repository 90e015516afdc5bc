package main

import (
	"testing"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
)

// TestMain runs the tests and removes the Caddy binary they built.
func TestMain(m *testing.M) { caddyproc.Main(m) }
