//go:build unix

// Package browser holds the browser tests of caddy-sse: they start Caddy,
// built from this module's cmd/caddy, as a separate process and drive
// Debian's Chromium, headless, over the DevTools protocol, so that what a
// real EventSource does is what is tested. The package has no code of its
// own; see its _test.go files. Without Chromium (chromium or
// chromium-browser on $PATH, or the path in SSE_CHROMIUM) the tests skip,
// or fail with SSE_REQUIRE_BROWSER=1.
package browser
