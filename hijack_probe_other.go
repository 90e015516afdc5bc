//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package caddysse

// peerClosed cannot probe a connection on this platform: a client that
// went away is noticed when a write to it fails.
func (o *connOutput) peerClosed() bool { return false }
