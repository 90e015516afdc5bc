//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package caddysse

import "syscall"

// peerClosed reports, without waiting, whether the client has closed or
// reset a connection taken over: a non-blocking read of what it sent.
// The client of an event stream sends nothing more; anything it does send
// is dropped.
func (o *connOutput) peerClosed() bool {
	if o.raw == nil {
		return false
	}
	rc, err := o.raw.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [256]byte
	err = rc.Read(func(fd uintptr) bool {
		for range 16 {
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_DONTWAIT)
			switch {
			case n > 0, err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			default: // zero bytes: the client closed; or an error such as ECONNRESET
				closed = true
			}
			return true
		}
		return true
	})
	return closed || err != nil
}
