//go:build ssebench

package main

// With the build tag ssebench, the binary also has the benchmarks' floor
// handler, sse_floor: go build -tags ssebench ./cmd/caddy
import _ "github.com/ssehub/caddy-sse/internal/benchfloor"
